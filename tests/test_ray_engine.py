"""``index --engine ray`` on a local Ray instance with the tiny CLAP: the local engine's archive bit
for bit, failures recorded, resume after kill -9 of the driver or of a model actor, shards that
change nothing when read twice, and one sentence when Ray is not installed.

One local Ray instance (2 CPUs) serves the whole module: starting one costs seconds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray[data] is in the dev extra; without it these tests cannot run")

from indexer import Archive, IndexOptions  # noqa: E402
from indexer.archive.manifest import Manifest  # noqa: E402
from indexer.config import EncoderConfig, RayOptions  # noqa: E402
from indexer.embedding import EmbeddingSetup  # noqa: E402
from indexer.indexing.shards import STAGING_DIR, SUFFIX  # noqa: E402
from indexer.model.loading import load_encoder  # noqa: E402
from tests.test_pipeline import ROOT, make_drop, snapshot  # noqa: E402

SHARED = ROOT / ".." / "shared" / "audio"
REAL = sorted((SHARED / "env" / "esc10_crying_baby").glob("*.mp3"))[:3] + sorted((SHARED / "formats").glob("hound__*.wav"))[:3]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tiny_clap_dir):
    return load_encoder(EncoderConfig(model=str(tiny_clap_dir)))


@pytest.fixture(scope="module")
def drop(tmp_path_factory) -> Path:
    folder = make_drop(tmp_path_factory.mktemp("ray-drop") / "drop")
    (folder / "real").mkdir()
    for i, path in enumerate(REAL):
        shutil.copy(path, folder / "real" / f"{i}-{path.name}")
    return folder


@pytest.fixture(scope="module")
def local_archive(drop, tiny, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("local") / "arch"
    with Archive.open(directory, encoder=tiny, create=True) as archive:
        archive.index([drop])
    return directory


RAY = IndexOptions(engine="ray", ray=RayOptions(workers=2))


def test_the_ray_engine_builds_the_local_engines_archive_bit_for_bit(cluster, drop, tiny, local_archive, tmp_path):
    with Archive.open(tmp_path / "arch", encoder=tiny, create=True) as archive:
        report = archive.index([drop], RAY)
        assert report.indexed == 4 + len(REAL) and report.windows_added >= 8
        kinds = {Path(f.path).name: f.error_kind for f in report.failed}  # a corrupt file on a worker: recorded, run goes on
        assert kinds["empty.mp3"] == "empty_audio" and kinds["broken.wav"] in {"decode", "unsupported_format"}
        assert all(f.error and Path(f.path).name in f.error for f in report.failed)
        assert report.model_seconds > 0
        hits = [(h.path, h.best.window_id, h.score) for h in archive.search("a baby crying", k=5)]
    assert snapshot(tmp_path / "arch", tiny) == snapshot(local_archive, tiny)  # ids, windows, vector bytes
    assert Manifest.load(tmp_path / "arch").setup == Manifest.load(local_archive).setup == EmbeddingSetup("cpu", "fp32", 8)
    with Archive.open(local_archive, encoder=tiny, read_only=True) as archive:
        local_hits = [(h.path, h.best.window_id, h.score) for h in archive.search("a baby crying", k=5)]
    assert [(Path(p).name, w, s) for p, w, s in hits] == [(Path(p).name, w, s) for p, w, s in local_hits]
    assert not list((tmp_path / "arch" / STAGING_DIR).rglob("*" + SUFFIX))  # committed shards are cleared
    with Archive.open(tmp_path / "arch", encoder=tiny) as archive:
        again = archive.index([drop], RAY)  # unchanged files: planned away before Ray is even asked
    assert again.indexed == 0 and again.unchanged == 4 + len(REAL) + 2


def test_actors_run_at_the_precision_asked_for_and_a_run_unlike_the_archives_says_so(
        cluster, drop, tiny, tiny_clap_dir, local_archive, tmp_path):
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder_config=EncoderConfig(model=str(tiny_clap_dir), device="cpu"), create=True) as archive:
        archive.index([drop / "a.wav"])  # the local engine records cpu, fp32, batch 8
    bf16 = EncoderConfig(model=str(tiny_clap_dir), device="cpu", precision="bf16")
    with Archive.open(arch, encoder_config=bf16) as archive:
        report = archive.index([drop / "b.wav"], RAY)
    assert report.indexed == 1
    assert report.notes == ["This archive was built with fp32 on cpu in batches of 8; this run embeds with bf16 on cpu "
                            "in batches of 8 — its vectors differ by about 1e-5, no search can tell, but a resumed run "
                            "is bit-identical only with the same device kind, precision and batch."]
    assert Manifest.load(arch).setup == EmbeddingSetup("cpu", "fp32", 8)  # the archive's own record stays
    with Archive.open(tmp_path / "fresh", encoder_config=bf16, create=True) as archive:
        archive.index([drop / "b.wav"], RAY)
    assert Manifest.load(tmp_path / "fresh").setup == EmbeddingSetup("cpu", "bf16", 8)
    ours, theirs, fp32 = (_vectors_of(directory, "b.wav", tiny) for directory in (arch, tmp_path / "fresh", local_archive))
    assert ours.tobytes() == theirs.tobytes() != fp32.tobytes()  # the actors ran bf16 in both
    assert (ours * fp32).sum(axis=1).min() >= 0.999


def _vectors_of(directory: Path, name: str, encoder) -> np.ndarray:
    with Archive.open(directory, encoder=encoder, read_only=True) as archive:
        recording = archive.catalog.one("SELECT id FROM recordings WHERE file_name = ?", [name])[0]
        return archive.window_vectors(archive.catalog.window_ids(recording))


def test_shards_of_an_interrupted_run_are_committed_without_the_model_and_read_twice_change_nothing(
        cluster, drop, tiny, local_archive, tmp_path, monkeypatch):
    from indexer.indexing.shards import Staging

    kept = tmp_path / "kept"
    with monkeypatch.context() as patch:  # as if killed after its shards were written, before they were cleared
        patch.setattr(Staging, "remove", lambda self, digests: None)
        with Archive.open(tmp_path / "first", encoder=tiny, create=True) as archive:
            archive.index([drop], IndexOptions(engine="ray", ray=RayOptions(workers=2, staging=kept)))
    assert len(list(kept.rglob("*" + SUFFIX))) == 4 + len(REAL)
    spare = tmp_path / "spare"
    shutil.copytree(kept, spare)
    with Archive.open(tmp_path / "second", encoder=tiny, create=True) as archive:  # every file found finished
        report = archive.index([drop], IndexOptions(engine="ray", ray=RayOptions(workers=2, staging=kept)))
        assert report.indexed == 4 + len(REAL) and report.model_seconds == 0.0
    assert snapshot(tmp_path / "second", tiny) == snapshot(local_archive, tiny)
    assert not list(kept.rglob("*" + SUFFIX))
    later = time.time() + 5
    for path in drop.rglob("*"):  # touched: planned again, and the same shards are there to be read again
        if path.is_file() and path.name not in ("broken.wav", "empty.mp3", "notes.txt"):
            os.utime(path, (later, later))
    with Archive.open(tmp_path / "second", encoder=tiny) as archive:
        again = archive.index([drop], IndexOptions(engine="ray", ray=RayOptions(workers=2, staging=spare)))
        assert again.indexed == 0 and again.model_seconds == 0.0 and again.unchanged == 4 + len(REAL) + 2
    assert snapshot(tmp_path / "second", tiny) == snapshot(local_archive, tiny)


DRIVER = """
import sys
from indexer.cli.main import main
sys.argv = ["soundtrace", "index", sys.argv[1], "--archive", sys.argv[2], "--engine", "ray", "--ray-address", sys.argv[3],
            "--workers", "2", "--model", sys.argv[4], "-q"]
main()
"""


def test_kill_9_of_the_driver_then_the_same_command_again_equals_a_local_run(cluster, drop, tiny, tiny_clap_dir,
                                                                            local_archive, tmp_path):
    directory = tmp_path / "arch"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", DRIVER, str(drop), str(directory), cluster, str(tiny_clap_dir)]
    with Archive.open(directory, encoder=tiny, create=True):
        pass  # the archive exists: the driver loads no model of its own
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if list((directory / STAGING_DIR).rglob("*" + SUFFIX)):
            break  # some files are finished and some not: kill it now
        time.sleep(0.05)
    assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]  # finished; two files failed (their reasons are printed)
    assert snapshot(directory, tiny) == snapshot(local_archive, tiny)


def test_kill_9_of_a_model_actor_mid_run_still_gives_the_local_archive(cluster, drop, tiny, local_archive, tmp_path):
    result: dict = {}

    def run() -> None:
        try:
            with Archive.open(tmp_path / "arch", encoder=tiny, create=True) as archive:
                result["report"] = archive.index([drop], RAY)
        except BaseException as exc:  # noqa: BLE001 — reported below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        actors = [int(line.split()[0]) for line in listing.splitlines() if "EmbedWindows" in line and "ps -eo" not in line]
        if actors:
            time.sleep(1.0)  # let it load the model and take a batch
            os.kill(actors[0], signal.SIGKILL)
            killed = actors[0]
        time.sleep(0.1)
    thread.join(timeout=300)
    assert killed is not None and "error" not in result, result.get("error")
    assert snapshot(tmp_path / "arch", tiny) == snapshot(local_archive, tiny)


def test_without_ray_installed_one_sentence_says_how_to_install_it(drop, tmp_path):
    fake = tmp_path / "no-ray"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "indexer.cli", "index", str(drop), "--archive", str(tmp_path / "a"),
                           "--engine", "ray"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "pip install 'soundtrace[ray]'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "a").exists()  # refused before anything was created


def test_a_model_the_workers_cannot_load_is_one_sentence(cluster, drop, tiny, tmp_path):
    from indexer.errors import ModelNotAvailableError

    with Archive.open(tmp_path / "arch", encoder=tiny, create=True):
        pass
    missing = EncoderConfig(model=str(tmp_path / "no-such-model"))
    with Archive.open(tmp_path / "arch", encoder_config=missing) as archive:
        with pytest.raises(ModelNotAvailableError, match="does not exist") as raised:
            archive.index([drop], RAY)
    assert "Traceback" not in str(raised.value) and "\n" not in str(raised.value)


def test_without_an_address_the_cli_starts_its_own_local_ray(drop, tiny_clap_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "indexer.cli", "index", str(drop), "--archive", str(tmp_path / "a"),
                           "--engine", "ray", "--workers", "1", "--model", str(tiny_clap_dir), "-q"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]  # finished; the two bad files are listed with reasons
    assert "broken.wav" in done.stdout + done.stderr and "Traceback" not in done.stderr
    with Archive.open(tmp_path / "a", read_only=True, encoder_config=EncoderConfig(model=str(tiny_clap_dir))) as archive:
        assert archive.catalog.window_count() >= 8


def test_a_torn_shard_is_removed_and_the_next_run_embeds_its_file_again(cluster, drop, tiny, local_archive, tmp_path):
    from indexer.audio.sources import content_hash
    from indexer.config import DecodeOptions
    from indexer.errors import EngineError
    from indexer.indexing.ray_engine import _actor_model
    from indexer.indexing.shards import Staging

    with Archive.open(tmp_path / "arch", encoder=tiny, create=True) as archive:
        # a run's decoding settings with the archive's channel mode resolved (a new archive: mix)
        staging = Staging(tmp_path / "arch" / STAGING_DIR, archive.manifest, DecodeOptions(channels="mix"),
                          _actor_model(archive, RAY.ray))
        staging.folder.mkdir(parents=True)
        torn = staging.folder / (content_hash(drop / "a.wav") + SUFFIX)
        torn.write_bytes(b"PK\x03\x04 cut off by a crash")
        with pytest.raises(EngineError, match="could not be read and was removed"):
            archive.index([drop], RAY)
        assert not torn.exists()
        archive.index([drop], RAY)
    assert snapshot(tmp_path / "arch", tiny) == snapshot(local_archive, tiny)


def test_decoding_tasks_follow_the_clusters_cpus_not_the_model_actors():
    """A GPU machine's one model actor must not leave its 16 cores decoding two files at a time."""
    from indexer.indexing.ray_engine import FILES_PER_TASK, decoding_tasks

    assert decoding_tasks({"CPU": 16.0, "GPU": 1.0}, 240) == (16, FILES_PER_TASK)
    assert decoding_tasks({"CPU": 16.0, "GPU": 1.0}, 20) == (16, 2)  # every core gets files
    assert decoding_tasks({"CPU": 2.0}, 1) == (2, 1)
    assert decoding_tasks({}, 9) == (1, FILES_PER_TASK)
