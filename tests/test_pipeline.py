"""Indexing with the fake encoder: failures recorded, incremental re-runs, replacement, pruning, kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexer import Archive, IndexOptions
from indexer.errors import ModelMismatchError
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder

ROOT = Path(__file__).resolve().parents[1]


def make_drop(folder: Path) -> Path:
    write_sequence(folder / "a.wav", [(440, 10), (1200, 10), (3700, 10)])
    write_sequence(folder / "b.wav", [(1200, 5)])
    write_sequence(folder / "sub" / "c.flac", [(3700, 25)])
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    (folder / "empty.mp3").write_bytes(b"")
    write_sequence(folder / "silent.wav", [(0, 5)])
    (folder / "notes.txt").write_text("not audio, not picked up from a folder")
    return folder


def snapshot(directory: Path, encoder=None) -> dict:
    """Everything that defines an archive's content, independent of timing."""
    encoder = encoder or FakeEncoder()
    with Archive.open(directory, encoder=encoder, read_only=True) as archive:
        con = archive.catalog.con
        recordings = con.execute(
            "SELECT id, path, status, error_kind, content_hash, duration_s FROM recordings ORDER BY id"
        ).fetchall()
        windows = con.execute(
            "SELECT id, recording_id, channel, start_s, end_s FROM windows ORDER BY id"
        ).fetchall()
        store_ids = archive.store.ids()
        vectors = archive.window_vectors([w[0] for w in windows]) if windows else np.empty((0, 0), np.float32)
        next_id = archive.catalog.next_window_id()
        dead = archive.catalog.dead_window_ids().tolist()
        stored_bytes = sum(s.path.stat().st_size for s in archive.store.segments)
    return {
        "recordings": recordings,
        "windows": [(*w, v.tobytes()) for w, v in zip(windows, vectors)],
        "store_ids": store_ids.tolist(),
        "dead": dead,
        "next_window_id": next_id,
        "segment_bytes": stored_bytes,
    }


@pytest.fixture
def drop(tmp_path):
    return make_drop(tmp_path / "drop")


def test_index_records_failures_and_goes_on(drop, tmp_path):
    encoder = FakeEncoder()
    with Archive.open(tmp_path / "arch", encoder=encoder, create=True) as archive:
        report = archive.index([drop])
        assert report.discovered == 6
        assert report.indexed == 4
        kinds = {Path(f.path).name: f.error_kind for f in report.failed}
        assert kinds == {"broken.wav": kinds["broken.wav"], "empty.mp3": "empty_audio"}
        assert kinds["broken.wav"] in {"decode", "unsupported_format"}
        assert all(f.error and Path(f.path).name in f.error for f in report.failed)
        # a: 3 windows, b: 1 short padded window, c: 10 + 10 + 5 s tail = 3 windows, silent: 1
        assert report.windows_added == 8 == archive.catalog.window_count() == len(archive.store)
        failed = archive.catalog.con.execute("SELECT count(*) FROM recordings WHERE status = 'failed'").fetchall()
        assert failed[0][0] == 2
        silent = archive.catalog.one("SELECT status, is_silent FROM recordings WHERE file_name = 'silent.wav'")
        assert silent == ("indexed", True)  # a dead line is a finding to count, not an error
        spans = archive.catalog.con.execute(
            "SELECT start_s, end_s FROM windows w JOIN recordings r ON r.id = w.recording_id"
            " WHERE r.file_name = 'c.flac' ORDER BY start_s"
        ).fetchall()
        assert spans == [(0, 10), (10, 20), (20, 25)]
    snap = snapshot(tmp_path / "arch")
    assert snap["store_ids"] == [w[0] for w in snap["windows"]]


def test_rerun_does_no_model_work(drop, tmp_path):
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
    before = snapshot(tmp_path / "arch")
    encoder = FakeEncoder()
    with Archive.open(tmp_path / "arch", encoder=encoder) as archive:
        report = archive.index([drop])
    assert (report.indexed, report.unchanged, len(report.failed)) == (0, 6, 0)
    assert encoder.audio_calls == 0
    assert snapshot(tmp_path / "arch") == before


def test_touched_file_is_not_reembedded(drop, tmp_path):
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
    os.utime(drop / "a.wav", (time.time() + 100, time.time() + 100))
    encoder = FakeEncoder()
    with Archive.open(tmp_path / "arch", encoder=encoder) as archive:
        report = archive.index([drop])
    assert encoder.audio_calls == 0 and report.unchanged == 6 and report.indexed == 0


def test_changed_file_replaces_its_windows(drop, tmp_path):
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        old = set(archive.catalog.window_ids(_rec_id(archive, "a.wav")).tolist())
    write_sequence(drop / "a.wav", [(440, 10), (1200, 10)])
    encoder = FakeEncoder()
    with Archive.open(tmp_path / "arch", encoder=encoder) as archive:
        report = archive.index([drop])
        new = set(archive.catalog.window_ids(_rec_id(archive, "a.wav")).tolist())
        assert report.indexed == 1 and encoder.windows_embedded == 2
        assert len(new) == 2 and not (old & new)
        assert set(archive.store.ids().tolist()) == set(
            r[0] for r in archive.catalog.con.execute("SELECT id FROM windows").fetchall()
        )
        assert archive.catalog.window_count() == 7  # the silent recording's window included


def test_copied_file_reuses_vectors(drop, tmp_path):
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
    shutil.copy(drop / "a.wav", drop / "a_copy.wav")
    encoder = FakeEncoder()
    with Archive.open(tmp_path / "arch", encoder=encoder) as archive:
        report = archive.index([drop])
        assert report.reused == 1 and encoder.audio_calls == 0
        hits = archive.search("tone 1200", k=10)
        names = {Path(h.path).name for h in hits}
        assert {"a.wav", "a_copy.wav"} <= names


def test_prune_drops_recordings_whose_files_are_gone(drop, tmp_path):
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
    (drop / "sub" / "c.flac").unlink()
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder()) as archive:
        report = archive.index([drop], IndexOptions(prune=False))
        assert report.pruned == 0 and archive.catalog.window_count() == 8
        report = archive.index([drop], IndexOptions(prune=True))
        assert report.pruned == 1
        assert archive.catalog.window_count() == len(archive.store) == 5


def test_retry_failed(drop, tmp_path):
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        report = archive.index([drop], IndexOptions(retry_failed=True))
        assert len(report.failed) == 2 and report.unchanged == 4


def test_archive_refuses_another_model(drop, tmp_path):
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
    with pytest.raises(ModelMismatchError, match="cannot be mixed"):
        Archive.open(tmp_path / "arch", encoder=FakeEncoder(revision="other-weights"))


def test_window_ids_are_never_reused(drop, tmp_path):
    """Replacing the newest recording once gave its new windows its old ids; a stale index file
    could then hold a different vector under an id the catalog still has."""
    folder = tmp_path / "grow"
    write_sequence(folder / "a.wav", [(440, 10)])
    write_sequence(folder / "b.wav", [(1200, 10)])
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([folder])
        before = archive.catalog.window_ids(_rec_id(archive, "b.wav"))
        write_sequence(folder / "b.wav", [(3700, 10)])
        archive.index([folder])
        after = archive.catalog.window_ids(_rec_id(archive, "b.wav"))
    assert after.min() > before.max()


def _rec_id(archive, name):
    return archive.catalog.one("SELECT id FROM recordings WHERE file_name = ?", [name])[0]


# --- kill -9 -------------------------------------------------------------------------------------

WORKER = """
import sys, time
sys.path.insert(0, {root!r})
from indexer import Archive, IndexOptions
from tests.fakes import FakeEncoder

class Slow(FakeEncoder):
    def embed_audio(self, windows):
        time.sleep(0.02)
        out = super().embed_audio(windows)
        with open({marker!r}, "w") as fh:
            fh.write(str(self.audio_calls))
        return out

with Archive.open({arch!r}, encoder=Slow(), create=True) as archive:
    archive.index([{drop!r}], {options})
"""


def worker_code(arch: Path, drop: Path, marker: Path, options: str = "IndexOptions()") -> str:
    """The child's program: index ``drop`` into ``arch`` (``options``: an IndexOptions expression),
    writing the number of embedded batches to ``marker``."""
    return WORKER.format(root=str(ROOT), arch=str(arch), drop=str(drop), marker=str(marker), options=options)


def run_worker(arch: Path, drop: Path, kill_after_batches: int | None, options: str = "IndexOptions()") -> None:
    """Index ``drop`` in a child process; kill -9 it once it has embedded that many batches."""
    marker = arch.parent / "batches-done"
    marker.unlink(missing_ok=True)
    code = worker_code(arch, drop, marker, options)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    if kill_after_batches is None:
        assert proc.wait(timeout=300) == 0
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = marker.read_text().strip() if marker.exists() else ""
        if done.isdigit() and int(done) >= kill_after_batches:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def big_drop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bigdrop")
    rng = np.random.default_rng(7)
    for i in range(40):
        freqs = rng.choice([300, 440, 700, 1200, 2000, 3700, 6000], size=int(rng.integers(1, 4)))
        write_sequence(folder / f"rec{i:02d}.wav", [(float(f), 10) for f in freqs])
    (folder / "zz_broken.wav").write_bytes(b"not audio at all")
    return folder


@pytest.fixture(scope="module")
def clean_snapshot(big_drop, tmp_path_factory):
    arch = tmp_path_factory.mktemp("clean") / "arch"
    run_worker(arch, big_drop, None)
    return snapshot(arch)


@pytest.mark.parametrize("kill_after_batches", [1, 6, 12, 20])
def test_kill_9_then_rerun_equals_clean_run(big_drop, clean_snapshot, tmp_path, kill_after_batches):
    arch = tmp_path / "arch"
    run_worker(arch, big_drop, kill_after_batches)
    partial = snapshot(arch) if (arch / "manifest.json").exists() else {"recordings": []}
    assert len(partial["recordings"]) < len(clean_snapshot["recordings"])
    run_worker(arch, big_drop, None)
    assert snapshot(arch) == clean_snapshot


def test_memory_stays_flat_on_a_long_recording(tmp_path):
    """A 30-minute file must not be held in memory: decoded windows are freed once embedded."""
    import tracemalloc

    import soundfile as sf

    path = tmp_path / "long.wav"
    rate = 8000
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as fh:
        t = np.arange(rate * 60) / rate
        minute = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for _ in range(30):
            fh.write(minute)
    full_size = 30 * 60 * 48_000 * 4  # the whole recording at 48 kHz float32: 345 MB
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        tracemalloc.start()
        report = archive.index([path])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert report.windows_added == 180
    assert peak < full_size / 4, f"peak {peak / 1e6:.0f} MB"


def test_a_decoder_crash_fails_that_file_and_the_run_goes_on(tmp_path):
    """If the decoding process dies mid-file (a library crash), only that file is lost."""
    from indexer.config import DecodeOptions, WindowConfig
    from indexer.indexing.decoder_pool import DecoderPool
    from indexer.indexing.decoder_process import OUTCOME, WINDOW, DecodeJob
    from indexer.audio.sources import discover

    for i in range(3):
        write_sequence(tmp_path / f"f{i}.wav", [(440, 10)] * 4)
    files = discover([tmp_path]).files
    decoder = DecoderPool(DecodeJob(files, {}, {}, WindowConfig(), DecodeOptions()), 1, queue_size=2)
    outcomes, killed = {}, False
    try:
        for kind, index, payload in decoder.messages():
            if kind == WINDOW and index == 1 and not killed:
                os.kill(decoder.pids[0], signal.SIGKILL)
                killed = True
            if kind == OUTCOME:
                outcomes[index] = payload
    finally:
        decoder.stop()
    assert killed
    assert outcomes[0].kind == "indexed" and outcomes[2].kind == "indexed"
    assert outcomes[1].kind == "failed" and outcomes[1].row.error_kind == "decoder_crash"
    assert "f1.wav crashed the audio decoder" in outcomes[1].row.error


ZOO = ROOT / ".." / "shared" / "audio" / "formats"


@pytest.mark.skipif(not ZOO.is_dir(), reason="../shared/audio/formats is not present")
def test_format_zoo_is_indexed_or_failed_with_reasons(tmp_path):
    """Every file of the real-world format zoo ends indexed or failed with a reason; the run never stops."""
    from tests.test_audio import ZOO_ROWS, _expectation

    expectations = {Path(r["path"]).name: _expectation(r) for r in ZOO_ROWS}
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        report = archive.index(sorted(ZOO.iterdir()))  # named files are tried whatever their extension
        rows = archive.catalog.con.execute("SELECT file_name, status, error_kind, error FROM recordings").fetchall()
    by_name = {name: (status, kind, error) for name, status, kind, error in rows}
    assert set(by_name) == set(expectations)
    for name, expected in expectations.items():
        status, kind, error = by_name[name]
        if expected in ("broken", "raw"):
            assert status == "failed" and kind in {"decode", "unsupported_format"}, (name, kind, error)
        if status == "failed":
            assert error and name in error, (name, error)
        else:
            assert expected == "decodes", name
    assert report.indexed >= 25 and report.indexed + len(report.failed) == len(expectations)


def test_searches_keep_answering_while_an_index_run_writes(big_drop, tmp_path):
    """The indexer lets go of the catalog between commits, so readers get in during a long run."""
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=FakeEncoder(), create=True) as archive:
        archive.index([big_drop / "rec00.wav"])
    marker = tmp_path / "batches-done"
    code = worker_code(arch, big_drop, marker).replace("0.02", "0.4")
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    answered = []
    try:
        while writer.poll() is None and len(answered) < 3:
            if not marker.exists():
                time.sleep(0.05)
                continue
            started = time.monotonic()
            with Archive.open(arch, encoder=FakeEncoder(), read_only=True) as reader:
                hits = reader.search("tone 440", k=3)
            answered.append((time.monotonic() - started, len(hits)))
    finally:
        assert writer.wait(timeout=300) == 0  # the writer got its lock back after each reader
    assert len(answered) >= 2, f"only {len(answered)} searches got in while the run wrote"
    assert all(seconds < 10 and n > 0 for seconds, n in answered)


def test_ready_files_are_committed_in_rounds_not_one_catalog_reopen_each(tmp_path, monkeypatch):
    """Reopening the catalog after letting readers in costs ≈ 35 ms; per model batch that was ≈ 3%
    of a CPU run. Files finished within ``COMMIT_EVERY_S`` share one reopen (and one transaction,
    ``test_bulk_commit``), and every file is in the archive at the end."""
    import indexer.archive.catalog as catalog_module
    from indexer.indexing.commits import COMMIT_EVERY_S

    for i in range(12):
        write_sequence(tmp_path / "drop" / f"f{i:02d}.wav", [(300 + 100 * i, 10)] * 3)
    opened = []
    real_connect = catalog_module.connect
    monkeypatch.setattr(catalog_module, "connect", lambda *a: opened.append(1) or real_connect(*a))
    encoder = FakeEncoder()
    with Archive.open(tmp_path / "archive", encoder=encoder, create=True) as archive:
        opened.clear()
        started = time.perf_counter()
        report = archive.index([tmp_path / "drop"])
        elapsed = time.perf_counter() - started
        assert report.indexed == 12 and report.windows_added == 36
        assert archive.catalog.con.execute("SELECT count(*) FROM windows").fetchone()[0] == 36
    batches = 36 // encoder.batch_size
    assert len(opened) <= 2 + int(elapsed / COMMIT_EVERY_S) < batches


@pytest.mark.skipif(not Path("/proc/self/status").exists() or (os.cpu_count() or 1) < 2,
                    reason="needs Linux /proc and more than one core")
def test_the_decoding_process_runs_numpy_on_one_thread(tmp_path):
    """A second BLAS thread in the decoder spun beside the model and doubled decoding's CPU cost."""
    from indexer.audio.sources import discover
    from indexer.config import DecodeOptions, WindowConfig
    from indexer.indexing.decoder_pool import DecoderPool
    from indexer.indexing.decoder_process import DecodeJob

    write_sequence(tmp_path / "long.wav", [(440, 120)])
    decoder = DecoderPool(DecodeJob(discover([tmp_path]).files, {}, {}, WindowConfig(), DecodeOptions()), 1, queue_size=2)
    try:
        messages = decoder.messages()
        next(messages)  # the child has imported numpy and decoded a window; the full queue now holds it back
        time.sleep(0.5)
        status = Path(f"/proc/{decoder.pids[0]}/status").read_text()
        threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
    finally:
        decoder.stop()
    assert threads == 1
