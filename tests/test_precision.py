"""Precision, the device's batch, the asynchronous encoder API, and what the manifest records of them.

The tiny random-weight CLAP is loaded through the real loading path; CUDA tests skip without a GPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from indexer.archive.manifest import MANIFEST_FILE, Manifest
from indexer.cli.main import cli
from indexer.config import DEFAULT_BATCH, EncoderConfig, resolve_precision
from indexer.embedding import EmbeddingSetup, ReadyVectors, submit_audio
from indexer.errors import ArchiveDamagedError, DeviceError, UnsupportedPrecisionError
from indexer.model.encoder import ClapEncoder
from indexer.model.loading import load_encoder
from indexer.model.precision import running_at
from tests.fakes import FakeEncoder
from tests.test_encoder import MIXED, realish

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run(*args) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tiny_clap_dir: Path) -> ClapEncoder:
    return load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu"))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- what "auto" means, and what a CPU refuses ----------------------------------------------------


def test_auto_is_bf16_on_cuda_and_fp32_on_a_cpu_with_the_devices_batch() -> None:
    assert resolve_precision("auto", "cuda") == "bf16" and resolve_precision("auto", "cpu") == "fp32"
    assert EncoderConfig().batch_size is None and EncoderConfig().precision == "auto"
    assert EncoderConfig().for_device("cpu") == EncoderConfig(batch_size=DEFAULT_BATCH["cpu"], precision="fp32")
    assert EncoderConfig().for_device("cuda").batch_size == DEFAULT_BATCH["cuda"] == 64
    assert EncoderConfig(batch_size=3, precision="bf16").for_device("cpu").batch_size == 3


@pytest.mark.parametrize("precision", ["tf32", "fp16"])
def test_gpu_only_precisions_on_a_cpu_are_a_device_error_naming_what_works(tiny_clap_dir, precision) -> None:
    with pytest.raises(UnsupportedPrecisionError) as info:
        load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu", precision=precision))
    message = str(info.value)
    assert isinstance(info.value, DeviceError)
    assert "\n" not in message and message.endswith(".") and "fp32" in message and "bf16" in message


def test_gpu_only_precision_on_the_cli_is_one_line_exit_1(tmp_path) -> None:
    result = run("search", "tone", "--archive", tmp_path / "none", "--device", "cpu", "--precision", "fp16")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "fp32" in lines[0] and "Traceback" not in result.output
    assert run("search", "--help").output.count("--precision") == 1


def test_tf32_flags_are_restored_after_the_call() -> None:
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
    with running_at("tf32", torch.device("cuda")):
        inside = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
        assert inside in ("tf32", True)
    after = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
    assert after == before


# --- bf16 on a CPU --------------------------------------------------------------------------------


def test_bf16_autocast_runs_on_a_cpu_within_cosine_0_9999_of_fp32(tiny, tiny_clap_dir) -> None:
    bf16 = load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu", precision="bf16"))
    assert bf16.precision == "bf16" and bf16.setup == EmbeddingSetup("cpu", "bf16", 8)
    windows = MIXED[:3]
    audio32, audio16 = tiny.embed_audio(windows), bf16.embed_audio(windows)
    assert audio16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(audio16, axis=1), 1.0, atol=1e-5)
    assert _cosines(audio32, audio16).min() >= 0.9999  # measured 0.99997 on the tiny model
    assert not np.array_equal(audio32, audio16)  # it did run at another precision
    labels = ["dog barking", "a siren"]
    assert _cosines(tiny.embed_text(labels), bf16.embed_text(labels)).min() >= 0.9999


# --- pad before the mel; submit ---------------------------------------------------------------------


def test_a_short_batch_is_padded_before_the_mel(tiny) -> None:
    short = tiny.audio_inputs(MIXED[:3], rows=8)["input_features"]
    full = tiny.audio_inputs(MIXED[:3] + [MIXED[0]] * 5)["input_features"]
    assert short.shape[0] == 8 and torch.equal(short, full)


def test_submit_result_has_embed_audios_bits_on_a_cpu(tiny) -> None:
    windows = [realish(10.0, seed) for seed in range(5)] + MIXED  # 10 windows: batches of 8 and 2
    reference = tiny.embed_audio(windows)
    pending = tiny.submit(windows)
    assert pending.result().tobytes() == reference.tobytes()
    assert submit_audio(tiny, windows[:3]).result().tobytes() == reference[:3].tobytes()
    assert tiny.submit([]).result().shape == (0, 32)
    with pytest.raises(ValueError):
        tiny.submit([np.zeros(0, np.float32)])


def test_submit_audio_wraps_an_encoder_without_submit() -> None:
    fake = FakeEncoder()
    windows = [realish(1.0, seed) for seed in range(3)]
    pending = submit_audio(fake, windows)
    assert isinstance(pending, ReadyVectors) and fake.audio_calls == 1  # computed eagerly
    np.testing.assert_array_equal(pending.result(), FakeEncoder().embed_audio(windows))


def test_the_pinned_slots_keep_every_batchs_vectors_while_others_are_in_flight(tiny_clap_dir, tiny) -> None:
    """The CUDA path's order of slots, run on a CPU (unpinned, synchronous): a slot is written again
    only after what it carried was taken out, whether or not its caller asked yet."""
    other = load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu"))
    other._asynchronous = True
    windows = [realish(10.0, seed) for seed in range(4)] + MIXED
    reference = tiny.embed_audio(windows)
    assert other.embed_audio(windows * 3).tobytes() == np.concatenate([reference] * 3).tobytes()
    pendings = [other.submit(windows[i : i + 3]) for i in range(0, len(windows), 3)]  # four in flight, two slots
    for i, pending in zip(range(0, len(windows), 3), pendings):
        assert pending.result().tobytes() == reference[i : i + 3].tobytes()


@CUDA
def test_on_cuda_a_window_has_the_same_bits_alone_in_a_full_batch_and_in_a_short_one(tiny_clap_dir) -> None:
    for precision in ("fp32", "bf16"):
        gpu = load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cuda", precision=precision))
        windows = [realish(10.0, seed) for seed in range(gpu.batch_size - len(MIXED) + 3)] + MIXED
        reference = gpu.embed_audio(windows)
        for grouping in ([[w] for w in windows[:4]], [windows[:3], windows[3:]], [windows[::-1]]):
            got = {id(w): row for group in grouping for w, row in zip(group, gpu.embed_audio(group))}
            for i, w in enumerate(windows):
                if id(w) in got:
                    assert got[id(w)].tobytes() == reference[i].tobytes(), (precision, i)


@CUDA
def test_on_cuda_submit_equals_embed_audio_and_precisions_stay_close(tiny_clap_dir, tiny) -> None:
    windows = [realish(10.0, seed) for seed in range(70)]
    fp32 = load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cuda", precision="fp32"))
    reference = fp32.embed_audio(windows)
    pendings = [fp32.submit(windows[i : i + 20]) for i in range(0, 70, 20)]
    assert np.concatenate([p.result() for p in pendings]).tobytes() == reference.tobytes()
    assert _cosines(reference, tiny.embed_audio(windows)).min() >= 0.9999  # CPU vs GPU
    for precision in ("tf32", "bf16", "fp16"):
        other = load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cuda", precision=precision))
        assert _cosines(reference, other.embed_audio(windows)).min() >= 0.9999, precision


# --- the manifest's record and the run's note ---------------------------------------------------------


def test_the_manifest_records_how_vectors_were_built_and_another_batch_gets_one_sentence(tiny_clap_dir, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    shutil.copy(SAMPLES / "tone_440hz_3s.flac", first / "a.flac")
    shutil.copy(SAMPLES / "beep_880hz_0.6s.flac", second / "b.flac")
    arch = tmp_path / "arch"
    result = run("index", first, "--archive", arch, "--model", tiny_clap_dir, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(arch)
    assert (manifest.device_kind, manifest.precision, manifest.batch_size) == ("cpu", "fp32", 8)
    assert "This archive was built" not in result.output

    result = run("index", second, "--archive", arch, "--device", "cpu", "--batch-size", "4", "-q")
    assert result.exit_code == 0, result.output
    assert "indexed 1," in result.output
    assert ("This archive was built with fp32 on cpu in batches of 8; this run embeds with fp32 on cpu in batches "
            "of 4") in " ".join(result.output.split())
    assert Manifest.load(arch).batch_size == 8  # the archive's own record stays

    info = json.loads(run("info", "--archive", arch, "--json").output)
    assert (info["device_kind"], info["precision"], info["batch_size"]) == ("cpu", "fp32", 8)
    assert "fp32 on cpu in batches of 8" in " ".join(run("info", "--archive", arch).output.split())


def test_an_older_manifest_without_the_record_loads_and_a_wrong_type_is_damage(tmp_path) -> None:
    base = {"model_id": "m", "revision": "r", "dim": 16, "window_s": 10, "hop_s": 10, "min_tail_s": 1}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(base))
    loaded = Manifest.load(tmp_path)
    assert loaded.setup is None and loaded.precision is None
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({**base, "device_kind": "cuda", "precision": "bf16", "batch_size": 64}))
    assert Manifest.load(tmp_path).setup == EmbeddingSetup("cuda", "bf16", 64)
    for wrong in ({"precision": 16}, {"precision": "int8"}, {"batch_size": "8"}, {"batch_size": 0}, {"device_kind": "tpu"}):
        (tmp_path / MANIFEST_FILE).write_text(json.dumps({**base, **wrong}))
        with pytest.raises(ArchiveDamagedError, match="manifest .* is damaged"):
            Manifest.load(tmp_path)


def test_the_app_takes_precision_from_its_launch_flags_or_the_environment(monkeypatch, tmp_path) -> None:
    pytest.importorskip("streamlit")
    from search_app import launch, state

    argv = launch.command(tmp_path, 8501, encoder=EncoderConfig(model="m", device="cpu", precision="bf16"))
    assert "--precision=bf16" in argv and not any(a.startswith("--batch-size") for a in argv)  # the device's
    monkeypatch.setattr("sys.argv", ["main.py", *argv[argv.index("--") + 1 :]])
    config = state.encoder_config(tmp_path)
    assert (config.precision, config.batch_size) == ("bf16", None)
    monkeypatch.setattr("sys.argv", ["main.py", "--archive", str(tmp_path), "--model", "m"])
    monkeypatch.setenv("SOUNDTRACE_PRECISION", "FP32")
    assert state.encoder_config(tmp_path).precision == "fp32"


@pytest.mark.slow
def test_bf16_on_a_cpu_stays_within_cosine_0_9999_with_the_full_size_model() -> None:
    """Measured 0.99997 on two windows (random weights, so its activations are the real model's size)."""
    from indexer.model.tiny_clap import build_full_size_random_clap

    windows = [realish(10.0, 1), realish(4.0, 2)]
    fp32 = build_full_size_random_clap(batch_size=2).embed_audio(windows)
    bf16 = build_full_size_random_clap(batch_size=2, precision="bf16").embed_audio(windows)
    assert _cosines(fp32, bf16).min() >= 0.9999
