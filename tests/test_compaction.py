"""`soundtrace compact`: deleted windows' rows and the catalog's free blocks given back, every answer
the same after as before, kill -9 at any moment leaving the old archive or the new one."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from indexer import Archive
from indexer.archive.integrity import check_directory
from indexer.archive.vector_store import StoreConfig
from indexer.audit import saved_runs as audit_runs
from indexer.audit.labelset import inline_labelset
from indexer.audit.runner import extend_standing_audits, run_audit
from indexer.cli.main import cli
from indexer.errors import ArchiveBusyError
from indexer.learning.marks import mark_windows
from tests.fakes import FakeEncoder
from tests.test_block_scan import _add
from tests.test_pipeline import ROOT

LABELS = inline_labelset(["tone 440", "tone 1200", "tone 3700"], name="tones", mode="multi-label", threshold="top 20%")
SMALL_ANN = StoreConfig(ann_min_windows=200)
QUERIES = ["tone 440", "tone 1200", "tone 3700", "tone 800"]


def _answers(archive) -> list:
    """What a user sees: hits (path, score, where) for a few queries, exact and through the ANN."""
    out = []
    for text in QUERIES:
        for exact in (False, True):
            out.append([(h.path, h.score, h.best.start_s) for h in archive.search(text, k=8, exact=exact)])
    return out


def _rows(archive, run_id) -> list:
    return audit_runs.rows_query(
        archive.catalog, [run_id], "SELECT a.* EXCLUDE (best_window_id), w.start_s AS window_start FROM audit_results a"
        " LEFT JOIN windows w ON w.id = a.best_window_id ORDER BY recording_id, label", [])


def _compacted(archive) -> bool:
    """No dead rows, and at most the few free blocks any write leaves in DuckDB's file."""
    spare = archive.info().reclaimable
    return spare.dead_windows == 0 and spare.vector_bytes == 0 and spare.catalog_bytes <= 4 * 262_144


@pytest.fixture
def arch(tmp_path):
    """An archive that deleted a third of its recordings after an audit, a mark and the ANN were made."""
    rng = np.random.default_rng(1)
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True, store_config=SMALL_ANN) as archive:
        _add(archive, 150, rng)
        archive.maintain_ann()
        run_audit(archive, LABELS, standing=True)
        ids = archive.catalog.con.execute("SELECT id FROM recordings ORDER BY id").fetchall()
        archive.delete_recordings([i for (i,) in ids[::3]])
        extend_standing_audits(archive)
        archive.catalog.con.execute("UPDATE recordings SET content_hash = 'hash-' || id")  # marks follow content
        window = int(archive.catalog.one("SELECT max(id) FROM windows")[0])
        mark_windows(archive, "tone 440", [window], positive=True)
    return tmp_path / "arch"


def test_compaction_frees_the_dead_rows_and_answers_as_before(arch):
    with Archive.open(arch, encoder=FakeEncoder(), store_config=SMALL_ANN) as archive:
        spare = archive.info().reclaimable
        assert spare.dead_windows > 100 and spare.vector_bytes == spare.dead_windows * archive.manifest.dim * 2
        answers, rows, marks = _answers(archive), _rows(archive, 1), archive.catalog.con.execute(
            "SELECT m.start_s, w.start_s FROM label_marks m JOIN windows w ON w.id = m.marked_window_id").fetchall()
        vectors_before = sum(p.stat().st_size for p in (arch / "vectors").glob("seg-*.faiss"))
        windows = len(archive.store)
        report = archive.compact()
        assert report.windows == windows and report.before == spare
        assert _compacted(archive) and not len(archive.store.dead)
        assert sum(p.stat().st_size for p in (arch / "vectors").glob("seg-*.faiss")) == pytest.approx(
            vectors_before - spare.vector_bytes, abs=4096)
        assert archive.store.ann is not None  # built again over the new ids
        assert _answers(archive) == answers and _rows(archive, 1) == rows
        assert archive.catalog.con.execute(
            "SELECT m.start_s, w.start_s FROM label_marks m JOIN windows w ON w.id = m.marked_window_id").fetchall() == marks
        assert extend_standing_audits(archive) == []  # nothing to score again: the run's windows followed their rows
    assert check_directory(arch).ok


def test_compaction_copies_a_catalog_that_kept_its_size_after_deletions(arch, tmp_path):
    with Archive.open(arch, encoder=FakeEncoder(), store_config=SMALL_ANN) as archive:
        archive.compact()
        for _ in range(3):  # audit runs made and their windows' recordings deleted: the catalog keeps its size
            _add(archive, 300, np.random.default_rng(2), first=1000 + _ * 300)
            ids = [i for (i,) in archive.catalog.con.execute("SELECT id FROM recordings ORDER BY id DESC LIMIT 300").fetchall()]
            archive.delete_recordings(ids)
        archive.catalog.con.execute("CHECKPOINT")
        grown = (arch / "catalog.duckdb").stat().st_size
        spare = archive.info().reclaimable
        assert spare.catalog_bytes > 0
        answers = _answers(archive)
        archive.compact()
        assert (arch / "catalog.duckdb").stat().st_size < grown - spare.catalog_bytes // 2
        assert _answers(archive) == answers and _compacted(archive)
    assert check_directory(arch).ok


KILLED = """
import os, signal, sys
sys.path.insert(0, {root!r})
from indexer import Archive
from indexer.archive import compaction, segments
from tests.fakes import FakeEncoder
from tests.test_compaction import SMALL_ANN
where = {where!r}
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if where == "copying the vectors":
    compaction.COPY_BLOCK_ROWS = 16
    append = segments.SegmentFiles.append
    calls = []
    def append_then_die(self, *args):
        calls.append(1)
        if len(calls) == 3:
            die()
        return append(self, *args)
    segments.SegmentFiles.append = append_then_die
elif where == "before the commit":
    compaction.os.replace = die
elif where == "right after the commit":
    compaction.finish_leftovers = lambda directory, catalog: die() if calls else calls.append(1)
    calls = []
else:  # building the ANN again
    Archive.maintain_ann = die
with Archive.open({arch!r}, encoder=FakeEncoder(), store_config=SMALL_ANN) as archive:
    archive.compact()
"""


@pytest.mark.parametrize("where", ["copying the vectors", "before the commit", "right after the commit", "building the ANN"])
def test_a_compaction_killed_at_any_step_leaves_an_archive_that_answers_and_compacts_again(arch, where):
    with Archive.open(arch, encoder=FakeEncoder(), store_config=SMALL_ANN, read_only=True) as archive:
        answers, rows = _answers(archive), _rows(archive, 1)
    done = subprocess.run([sys.executable, "-c", KILLED.format(root=str(ROOT), arch=str(arch), where=where)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == -9, done.stderr[-2000:]
    with Archive.open(arch, encoder=FakeEncoder(), store_config=SMALL_ANN, read_only=True) as archive:
        assert _answers(archive) == answers and _rows(archive, 1) == rows  # the old archive or the new, whole
    with Archive.open(arch, encoder=FakeEncoder(), store_config=SMALL_ANN) as archive:
        archive.compact()
        assert _answers(archive) == answers and _compacted(archive)
    assert check_directory(arch).ok
    assert sorted(p.name for p in (arch / "vectors").iterdir() if p.name.startswith("seg-")) == [
        s.path.name for s in Archive.open(arch, encoder=FakeEncoder(), read_only=True).store.segments]


HOLD_WRITER_LOCK = """
import sys, time
sys.path.insert(0, {root!r})
from indexer.archive.locks import WriterLock
lock = WriterLock({arch!r}); lock.acquire()
open({marker!r}, "w").close()
time.sleep(60)
"""


def test_compaction_is_refused_while_an_index_run_writes(arch, tmp_path):
    marker = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITER_LOCK.format(root=str(ROOT), arch=str(arch), marker=str(marker))])
    try:
        while not marker.exists():
            assert holder.poll() is None
        with Archive.open(arch, encoder=FakeEncoder()) as archive, pytest.raises(ArchiveBusyError):
            archive.compact()
        result = CliRunner().invoke(cli, ["compact", "--archive", str(arch)])
        assert result.exit_code == 1 and "is writing to the archive" in result.output and "Traceback" not in result.output
    finally:
        holder.kill()
        holder.wait()
    result = CliRunner().invoke(cli, ["compact", "--archive", str(arch)])
    assert result.exit_code == 0 and "Compacted" in result.output, result.output
    info = json.loads(CliRunner().invoke(cli, ["info", "--archive", str(arch), "--json"]).output)
    assert info["reclaimable"]["dead_windows"] == 0 and info["reclaimable"]["vector_bytes"] == 0


def test_compaction_skips_blocks_whose_windows_are_all_deleted_and_an_archive_emptied(arch, monkeypatch):
    from indexer.archive import compaction

    monkeypatch.setattr(compaction, "COPY_BLOCK_ROWS", 16)
    with Archive.open(arch, encoder=FakeEncoder(), store_config=SMALL_ANN) as archive:
        last = [i for (i,) in archive.catalog.con.execute("SELECT id FROM recordings ORDER BY id DESC LIMIT 30").fetchall()]
        archive.delete_recordings(last)  # the newest windows, whole blocks of them, dead
        answers = _answers(archive)
        archive.compact()
        assert _answers(archive) == answers and _compacted(archive)
        archive.delete_recordings([i for (i,) in archive.catalog.con.execute("SELECT id FROM recordings").fetchall()])
        archive.compact()
        assert len(archive.store) == 0 and archive.search("tone 440", k=5) == [] and _compacted(archive)
    assert check_directory(arch).ok
