"""Bulk commits: a round of files (new, replaced, reused, touched, failed) written in one vector
append and one catalog transaction ends as the same files written one per round; a round is
capped; a kill -9 anywhere in a round leaves none of it and a rerun ends as an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer import Archive, IndexOptions
from indexer.archive import bulk_commit
from indexer.archive.bulk_commit import FileWrite
from indexer.archive.records import RecordingRow, WindowRows
from indexer.errors import ArchiveError
from indexer.indexing import commits
from tests.audio_factory import write_sequence
from tests.fakes import DIM, FakeEncoder
from tests.test_pipeline import ROOT, big_drop, clean_snapshot, run_worker, snapshot  # noqa: F401

BROKEN = b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10


def full_state(directory: Path) -> dict:
    """Every row the catalog holds about recordings, windows and vectors (``indexed_at`` aside),
    the vector bytes, and the metadata links."""
    with Archive.open(directory, encoder=FakeEncoder(), read_only=True) as archive:
        con = archive.catalog.con
        columns = [c for c in archive.catalog.view_columns() if c not in ("indexed_at", "modified_at")]
        names = ", ".join(f'"{c}"' for c in columns)
        windows = con.execute("SELECT * FROM windows ORDER BY id").fetchall()
        ids = [w[0] for w in windows]
        return {
            "recordings": con.execute(f"SELECT {names} FROM recordings_view ORDER BY id").fetchall(),
            "windows": windows,
            "vectors": archive.window_vectors(ids).tobytes() if ids else b"",
            "next_window_id": archive.catalog.next_window_id(),
            "dead": archive.catalog.dead_window_ids().tolist(),
            "chunks": con.execute("SELECT * FROM vector_chunks ORDER BY first_id").fetchall(),
            "links": con.execute("SELECT * FROM recording_metadata ORDER BY ALL").fetchall(),
        }


class Progress:
    def __init__(self):
        self.done = []

    def stage(self, message):
        pass

    def start(self, files, total_bytes):
        pass

    def file_done(self, path, outcome, size_bytes, audio_s):
        self.done.append((Path(path).name, outcome, size_bytes, round(audio_s, 6)))

    def windows_embedded(self, count):
        pass

    def finish(self):
        pass


@pytest.fixture
def before_and_after(tmp_path):
    """An archive, and its folder changed every way a run can meet a file."""
    drop = tmp_path / "drop"
    write_sequence(drop / "a.wav", [(440, 10), (1200, 10)])
    write_sequence(drop / "b.wav", [(700, 10)])
    write_sequence(drop / "c.wav", [(2000, 5)])
    write_sequence(drop / "d.wav", [(3700, 10)])
    write_sequence(drop / "e.wav", [(300, 10)])
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
    shutil.copy(drop / "a.wav", drop / "a_copy.wav")  # a reuse of a.wav, which this run replaces first
    write_sequence(drop / "a.wav", [(6000, 20)])  # replaced: keeps its id, its old windows die
    shutil.copy(drop / "b.wav", drop / "b_copy.wav")  # a reuse of an unchanged recording
    (drop / "d.wav").write_bytes(BROKEN)  # an indexed file now failing: its windows die
    stat = (drop / "e.wav").stat()
    os.utime(drop / "e.wav", (stat.st_atime, stat.st_mtime + 100))  # touched: same bytes, new mtime
    write_sequence(drop / "f.wav", [(1200, 10), (300, 10)])  # new
    (drop / "g.wav").write_bytes(BROKEN)  # new, failing
    (tmp_path / "meta.csv").write_text("file_name,agent\na_copy.wav,ann\nf.wav,bob\na.wav,cy\n")
    return drop, arch, tmp_path / "meta.csv"


def _index(arch: Path, drop: Path, meta: Path, monkeypatch, every_s: float, max_files: int):
    rounds, parts = [], []
    save, commit = Archive.save_files, bulk_commit.commit
    monkeypatch.setattr(commits, "COMMIT_EVERY_S", every_s)
    monkeypatch.setattr(commits, "MAX_ROUND_FILES", max_files)
    monkeypatch.setattr(Archive, "save_files", lambda self, writes, **k: rounds.append(len(writes)) or save(self, writes, **k))
    monkeypatch.setattr(bulk_commit, "commit", lambda catalog, part, *a, **k: parts.append(len(part.writes))
                        or commit(catalog, part, *a, **k))
    progress = Progress()
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        report = archive.index([drop], IndexOptions(metadata=(meta,)), progress=progress)
    monkeypatch.undo()
    figures = (report.indexed, report.reused, report.unchanged, [f.path for f in report.failed], report.recording_ids,
               report.windows_added, round(report.audio_seconds, 6))
    return rounds, parts, figures, progress.done


def test_a_bulk_round_of_every_kind_equals_the_same_files_one_per_round(before_and_after, tmp_path, monkeypatch):
    drop, arch, meta = before_and_after
    single = tmp_path / "single"
    shutil.copytree(arch, single)
    rounds, parts, figures, done = _index(arch, drop, meta, monkeypatch, every_s=1e9, max_files=256)
    one_rounds, one_parts, one_figures, one_done = _index(single, drop, meta, monkeypatch, every_s=1e9, max_files=1)
    assert rounds == [7]  # a (replaced), a_copy, b_copy, d (now failing), e (touched), f (new), g (failed)
    assert parts == [1, 6]  # a_copy reuses a.wav's recording, replaced before it: a round of its own
    assert one_rounds == [1] * 7 and one_parts == [1] * 7
    assert figures == one_figures and done == one_done
    indexed, reused, unchanged, failed, ids, windows, _ = figures
    assert (indexed, reused, unchanged) == (2, 2, 3) and failed == [str(drop / "d.wav"), str(drop / "g.wav")]
    state = full_state(arch)
    assert state == full_state(single)
    assert state["dead"] and len(state["links"]) == 3
    by_name = {r[2]: r for r in state["recordings"]}  # (id, path, file_name, ...)
    assert by_name["a.wav"][0] == 1 and by_name["d.wav"][0] == 4  # replaced paths keep their ids
    assert sorted(ids) == sorted(r[0] for r in state["recordings"] if r[2] not in ("b.wav", "c.wav", "e.wav"))


@pytest.mark.parametrize("cap, expected", [("files", [3, 3, 1]), ("bytes", [2, 2, 2, 1])])
def test_a_backlog_is_committed_in_rounds_of_bounded_size(tmp_path, monkeypatch, cap, expected):
    drop = tmp_path / "drop"
    for i in range(7):
        write_sequence(drop / f"f{i}.wav", [(300 + 200 * i, 10)])
    rounds = []
    save = Archive.save_files
    monkeypatch.setattr(commits, "COMMIT_EVERY_S", 1e9)
    if cap == "files":
        monkeypatch.setattr(commits, "MAX_ROUND_FILES", 3)
    else:  # one window of DIM float32 a file: a round closes once it holds two
        monkeypatch.setattr(commits, "MAX_ROUND_BYTES", 2 * DIM * 4)
    monkeypatch.setattr(Archive, "save_files", lambda self, writes, **k: rounds.append(len(writes)) or save(self, writes, **k))
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        report = archive.index([drop])
        assert report.indexed == 7 and archive.catalog.window_count() == 7
    assert rounds == expected


def _rows(paths: list[str], windows: int) -> tuple[list[RecordingRow], list[WindowRows]]:
    rng = np.random.default_rng(3)
    rows = [RecordingRow(path=p, content_hash=p, size_bytes=1, mtime=1.0, status="indexed", duration_s=10.0) for p in paths]
    wins = [WindowRows(*(np.zeros(windows) for _ in range(7)), vectors=rng.standard_normal((windows, DIM)).astype(np.float32))
            for _ in paths]
    return rows, wins


def test_a_round_is_refused_whole_when_another_writer_moved_the_counter(tmp_path):
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.add_recordings(*_rows(["/x/1.wav"], 2))
        before = full_state_of(archive)
        rows, wins = _rows(["/x/2.wav", "/x/3.wav"], 3)
        part = bulk_commit.prepare(archive.catalog.con, [FileWrite.save(r, w) for r, w in zip(rows, wins)],
                                   archive.store.vectors)
        with pytest.raises(ArchiveError, match="Another process wrote this archive meanwhile"):
            bulk_commit.commit(archive.catalog, part, archive.catalog.next_window_id() - 1, [])
        with pytest.raises(ArchiveError, match="in the archive already"):
            archive.add_recordings(*_rows(["/x/4.wav", "/x/1.wav"], 1))
        with pytest.raises(ArchiveError, match="in the archive already"):
            archive.add_recordings(*_rows(["/x/5.wav", "/x/5.wav"], 1))
        assert full_state_of(archive) == before


def full_state_of(archive) -> tuple:
    con = archive.catalog.con
    return (con.execute("SELECT id, path FROM recordings ORDER BY id").fetchall(),
            con.execute("SELECT * FROM windows ORDER BY id").fetchall(), archive.catalog.next_window_id())


# --- kill -9 during a round ------------------------------------------------------------------------

ROUND_KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from indexer import Archive
from indexer.archive import bulk_commit, checksums, segments
from indexer.indexing import commits
from tests.fakes import FakeEncoder

commits.COMMIT_EVERY_S, commits.MAX_ROUND_FILES = 1e9, 8  # the whole run at the end, in rounds of 8 files
stage, rounds = {stage!r}, [0]
append, record, mark = segments.SegmentFiles.append, checksums.record, segments.SegmentFiles.mark_committed

def die_at(now):
    if now == stage and rounds[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)

def appending(self, *a):
    rounds[0] += 1
    out = append(self, *a)
    die_at("after the vectors")
    return out

def recording(con, chunks):
    record(con, chunks)
    die_at("inside the transaction")

def marking(self, segments):
    die_at("before the headers")
    mark(self, segments)

segments.SegmentFiles.append, checksums.record = appending, recording
segments.SegmentFiles.mark_committed = marking
with Archive.open({arch!r}, encoder=FakeEncoder(), create=True) as archive:
    archive.index([{drop!r}])
"""


@pytest.mark.parametrize("stage", ["after the vectors", "inside the transaction", "before the headers"])
def test_kill_9_during_a_round_then_rerun_equals_clean_run(big_drop, clean_snapshot, tmp_path, stage):  # noqa: F811
    arch = tmp_path / "arch"
    code = ROUND_KILLER.format(root=str(ROOT), arch=str(arch), drop=str(big_drop), stage=stage)
    died = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert died.returncode == -signal.SIGKILL, died.stderr
    partial = snapshot(arch)
    committed = 24 if stage == "before the headers" else 16  # two rounds of 8, or three
    assert partial["recordings"] == clean_snapshot["recordings"][:committed]
    assert partial["windows"] == clean_snapshot["windows"][:len(partial["windows"])]
    run_worker(arch, big_drop, None)
    assert snapshot(arch) == clean_snapshot
