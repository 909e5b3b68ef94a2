"""The real CLAP encoder on a tiny random-weight CLAP loaded through the real loading path."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.model import loading as loading_module
from indexer.config import SAMPLE_RATE, EncoderConfig
from indexer.embedding import DEFAULT_PROMPTS, l2_normalise
from indexer.model.devices import resolve_device
from indexer.model.encoder import ClapEncoder, features_tensor
from indexer.model.loading import load_encoder, local_revision
from indexer.errors import DeviceError, ModelError, ModelNotAvailableError
from indexer.model.melspec import LogMel
from indexer.model.tiny_clap import build_tiny_clap

SR = SAMPLE_RATE


def realish(seconds: float, seed: int = 0) -> np.ndarray:
    """A chirp, a gated tone, noise, a stretch of digital silence and a very quiet stretch."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * (200 + 600 * t) * t) + 0.05 * rng.standard_normal(n)
    x += 0.2 * np.sin(2 * np.pi * (1000 + 500 * seed) * t) * ((t % 1.0) < 0.3)
    x[n // 3 : n // 3 + n // 20] = 0.0
    x[n // 2 : n // 2 + n // 40] *= 1e-4
    return x.astype(np.float32)


MIXED = [realish(10.0, 1), realish(3.3, 2), realish(0.6, 3), realish(7.25, 4), realish(10.0, 5)]


@pytest.fixture(scope="module")
def tiny(tiny_clap_dir: Path) -> ClapEncoder:
    return load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu"))


# --- loading -----------------------------------------------------------------------------------


def test_loads_tiny_clap_through_load_encoder(tiny: ClapEncoder, tiny_clap_dir: Path) -> None:
    assert tiny.identity.model_id == str(tiny_clap_dir)
    assert tiny.identity.revision == local_revision(tiny_clap_dir)
    assert tiny.identity.revision.startswith("sha256:")
    assert tiny.identity.dim == 32
    assert tiny.sample_rate == SR
    assert tiny.max_window_s == 10.0
    assert tiny.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    assert tiny.device == torch.device("cpu")


def test_loading_prints_nothing(tiny_clap_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu"))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_tiny_build_is_reproducible(tiny_clap_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_clap(tmp_path / "again", seed=0)
    assert local_revision(again) == local_revision(tiny_clap_dir)


def test_threads_setting_applies(tiny_clap_dir: Path) -> None:
    before = torch.get_num_threads()
    try:
        load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu", threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_loads_from_a_hub_cache_snapshot_offline(tiny_clap_dir: Path, tmp_path: Path, monkeypatch, tiny) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--soundtrace--tiny-clap"
    shutil.copytree(tiny_clap_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_encoder(EncoderConfig(model="soundtrace/tiny-clap", cache_dir=str(tmp_path / "cache"), device="cpu"))
    assert enc.identity.model_id == "soundtrace/tiny-clap"
    assert enc.identity.revision == commit
    np.testing.assert_allclose(enc.embed_audio(MIXED[:2]), tiny.embed_audio(MIXED[:2]), atol=1e-6)


# --- missing / broken models -------------------------------------------------------------------


def _one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and "Traceback" not in message


def test_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError) as info:
        load_encoder(EncoderConfig(model=str(tmp_path / "nope"), device="cpu"))
    message = str(info.value)
    assert _one_sentence(message)
    assert "does not exist" in message and "--model DIR" in message


def test_hub_id_not_in_cache_offline_is_fast(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as info:
        load_encoder(EncoderConfig(model="laion/clap-htsat-fused", cache_dir=str(tmp_path / "empty"), device="cpu"))
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert _one_sentence(message)
    assert "not in the local Hugging Face cache" in message
    assert "hf download laion/clap-htsat-fused" in message
    assert "--model DIR" in message


def test_download_advice_names_a_command_the_installed_hub_client_has() -> None:
    import subprocess
    import sys

    tool, verb, model_id = loading_module.download_command("laion/clap-htsat-fused").split()
    assert (verb, model_id) == ("download", "laion/clap-htsat-fused")
    executable = Path(sys.executable).parent / tool
    assert executable.exists(), f"the advice names '{tool}', which this environment does not have"
    result = subprocess.run([str(executable), "download", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "repo" in result.stdout.lower()


@pytest.mark.parametrize(("installed", "tool"), [("0.33.4", "huggingface-cli"), ("0.34.0", "hf"), ("2.4.0", "hf")])
def test_download_advice_follows_the_hub_client_version(monkeypatch, installed, tool) -> None:
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed)
    assert loading_module.download_command("m/x") == f"{tool} download m/x"


def test_hub_id_not_in_cache_unreachable_hub_is_fast(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(loading_module, "_hub_reachable", lambda *args, **kwargs: False)
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match="hf download soundtrace-tests/absent"):
        load_encoder(EncoderConfig(model="soundtrace-tests/absent", cache_dir=str(tmp_path), device="cpu"))
    assert time.perf_counter() - start < 5.0


def test_hub_probe_refuses_error_pages(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused or error
    assert loading_module._hub_reachable("laion/clap-htsat-fused", None, timeout=1.0) is False


def test_hub_probe_is_bounded_when_the_network_hangs(monkeypatch) -> None:
    import huggingface_hub.utils

    class Hanging:
        def get(self, *args, **kwargs):
            time.sleep(30)

    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: Hanging())
    start = time.perf_counter()
    assert loading_module._hub_reachable("laion/clap-htsat-fused", None, timeout=0.3) is False
    assert time.perf_counter() - start < 3.0


def test_dir_that_is_not_clap(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="not a CLAP model") as info:
        load_encoder(EncoderConfig(model=str(tmp_path), device="cpu"))
    assert _one_sentence(str(info.value))


def _drop_weights(model: Path) -> None:
    (model / "model.safetensors").unlink()


def _truncate_weights(model: Path) -> None:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])


def _drop_audio_projection(model: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    kept = {k: v for k, v in tensors.items() if not k.startswith("audio_projection.")}
    save_file(kept, model / "model.safetensors", metadata={"format": "pt"})


def _drop_processor_files(model: Path) -> None:
    for name in ("processor_config.json", "preprocessor_config.json"):
        (model / name).unlink(missing_ok=True)


def _drop_tokenizer_vocabulary(model: Path) -> None:
    """transformers 5 would silently build a 5-token tokenizer here."""
    (model / "tokenizer.json").unlink()


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        (_drop_weights, ModelNotAvailableError, "no weights"),
        (_truncate_weights, ModelError, None),
        (_drop_audio_projection, ModelError, "missing"),
        (_drop_processor_files, ModelNotAvailableError, "feature extractor or tokenizer files are missing"),
        (_drop_tokenizer_vocabulary, ModelNotAvailableError, "tokenizer vocabulary"),
    ],
)
def test_a_damaged_model_dir_is_one_sentence(tiny_clap_dir: Path, tmp_path: Path, damage, error, match) -> None:
    broken = shutil.copytree(tiny_clap_dir, tmp_path / "m")
    damage(broken)
    with pytest.raises(error, match=match) as info:
        load_encoder(EncoderConfig(model=str(broken), device="cpu"))
    assert _one_sentence(str(info.value))


# --- devices -----------------------------------------------------------------------------------


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("cuda:99", "tpu", "cuda:x"):
        with pytest.raises(DeviceError) as info:
            resolve_device(bad)
        assert _one_sentence(str(info.value))


def test_bad_device_fails_before_loading(tiny_clap_dir: Path) -> None:
    with pytest.raises(DeviceError, match="cuda:99"):
        load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cuda:99"))


# --- audio -------------------------------------------------------------------------------------


def test_audio_vectors_shape_dtype_unit_norm(tiny: ClapEncoder) -> None:
    vectors = tiny.embed_audio(MIXED)
    assert vectors.shape == (len(MIXED), 32)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert tiny.embed_audio([]).shape == (0, 32)


def test_alone_equals_in_batch(tiny: ClapEncoder) -> None:
    batch = tiny.embed_audio(MIXED)
    reordered = tiny.embed_audio(MIXED[::-1])[::-1]
    for i, window in enumerate(MIXED):
        alone = tiny.embed_audio([window])[0]
        assert np.abs(alone - batch[i]).max() < 1e-5
        assert np.abs(alone - reordered[i]).max() < 1e-5


def test_a_window_has_the_same_bits_alone_in_a_full_batch_and_in_a_short_last_one(tiny: ClapEncoder) -> None:
    """What makes a resumed run byte-identical to an uninterrupted one: batches of one fixed shape."""
    windows = [realish(10.0, seed) for seed in range(7)] + MIXED  # 12 windows: batches of 8 and 4
    reference = tiny.embed_audio(windows)
    groupings = [[[w] for w in windows], [windows[:3], windows[3:]], [windows[5:], windows[:5]], [windows[::-1]]]
    for grouping in groupings:
        got = {id(w): row for group in grouping for w, row in zip(group, tiny.embed_audio(group))}
        for i, w in enumerate(windows):
            assert got[id(w)].tobytes() == reference[i].tobytes(), (grouping is groupings[0], i)


def test_batch_size_does_not_change_vectors(tiny: ClapEncoder) -> None:
    reference = tiny.embed_audio(MIXED)
    for batch_size in (1, 2, 3, 16):
        other = ClapEncoder(tiny.model, tiny.feature_extractor, tiny.tokenizer, tiny.identity, tiny.device, batch_size)
        assert np.abs(other.embed_audio(MIXED) - reference).max() < 1e-5


def test_audio_matches_the_transformers_reference_pipeline(tiny: ClapEncoder) -> None:
    """Torch mel + pinned is_longer gives what the stock extractor + model give (minus randomness)."""
    fe = tiny.feature_extractor
    for window in MIXED:
        inputs = fe(window, sampling_rate=SR, return_tensors="pt")
        with torch.inference_mode():
            ref = features_tensor(
                tiny.model.get_audio_features(
                    input_features=inputs["input_features"].float(), is_longer=torch.zeros((1, 1), dtype=torch.bool)
                )
            )
        np.testing.assert_allclose(tiny.embed_audio([window])[0], l2_normalise(ref.numpy())[0], atol=1e-4)


def test_fused_inputs_have_four_channels_and_is_longer_false(tiny: ClapEncoder) -> None:
    inputs = tiny.audio_inputs(MIXED[:3])
    assert tuple(inputs["input_features"].shape) == (3, 4, 1001, 64)
    assert not inputs["is_longer"].any()


def test_unfused_model(tmp_path: Path) -> None:
    enc = load_encoder(EncoderConfig(model=str(build_tiny_clap(tmp_path / "unfused", fused=False)), device="cpu"))
    assert enc.feature_extractor.truncation == "rand_trunc"
    assert tuple(enc.audio_inputs(MIXED[:2])["input_features"].shape) == (2, 1, 1001, 64)
    batch = enc.embed_audio(MIXED)
    assert np.abs(enc.embed_audio([MIXED[1]])[0] - batch[1]).max() < 1e-5


@pytest.mark.parametrize(
    "window", [np.zeros(SR * 10 + 1, np.float32), np.zeros(0, np.float32), np.zeros((2, SR), np.float32)]
)
def test_bad_windows_raise_value_error(tiny: ClapEncoder, window: np.ndarray) -> None:
    with pytest.raises(ValueError):
        tiny.embed_audio([window])


def test_non_finite_window_raises(tiny: ClapEncoder) -> None:
    window = realish(1.0)
    window[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tiny.embed_audio([window])


# --- text --------------------------------------------------------------------------------------


def test_text_is_the_normalised_mean_of_normalised_prompts(tiny: ClapEncoder) -> None:
    labels = ["dog barking", "glass breaking", "hold music"]
    ensemble = tiny.embed_text(labels)
    assert ensemble.shape == (3, 32) and ensemble.dtype == np.float32
    for i, label in enumerate(labels):
        singles = np.stack([tiny.embed_text([label], prompts=[p])[0] for p in DEFAULT_PROMPTS])
        np.testing.assert_allclose(np.linalg.norm(singles, axis=1), 1.0, atol=1e-5)
        expected = l2_normalise(singles.mean(axis=0))
        assert np.abs(ensemble[i] - expected).max() < 1e-5


def test_different_labels_give_different_vectors(tiny: ClapEncoder) -> None:
    a, b = tiny.embed_text(["dog barking", "customer shouting at agent"])
    assert float(a @ b) < 0.9999
    assert tiny.embed_text([]).shape == (0, 32)


def test_text_needs_a_tokenizer(tiny: ClapEncoder) -> None:
    audio_only = ClapEncoder(tiny.model, tiny.feature_extractor, None, tiny.identity, tiny.device)
    with pytest.raises(ModelError, match="tokenizer"):
        audio_only.embed_text(["dog"])


# --- return types ------------------------------------------------------------------------------


def test_features_tensor_handles_both_return_types() -> None:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    t = torch.randn(2, 8)
    assert features_tensor(t) is t
    assert features_tensor(BaseModelOutputWithPooling(last_hidden_state=torch.randn(2, 3, 4), pooler_output=t)) is t
    assert features_tensor((torch.randn(2, 3, 4), t)) is t

    class ClapOutputLike:
        audio_embeds = t

    assert features_tensor(ClapOutputLike()) is t
    with pytest.raises(ModelError):
        features_tensor(object())


# --- torch mel vs the transformers extractor ---------------------------------------------------


@pytest.mark.parametrize("truncation", ["fusion", "rand_trunc"])
@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
@pytest.mark.parametrize("seconds", [10.0, 3.3, 0.02])
def test_torch_mel_matches_the_extractor(truncation: str, padding: str, seconds: float) -> None:
    from transformers import ClapFeatureExtractor

    from indexer.model.tiny_clap import CLAP_FEATURE_EXTRACTOR

    fe = ClapFeatureExtractor(**{**CLAP_FEATURE_EXTRACTOR, "truncation": truncation, "padding": padding})
    wave = realish(seconds, seed=7)
    ref = fe(wave, sampling_rate=SR, return_tensors="np")["input_features"][0, 0]
    got = LogMel(fe).features([wave])[0].numpy()
    assert got.shape == ref.shape == (1001, 64)
    assert np.abs(got - ref).max() < 1e-3  # dB; float32 STFT vs the extractor's float64 one
