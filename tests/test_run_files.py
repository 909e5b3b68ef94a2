"""An audit run's rows live in Parquet files the catalog names: saved whole or not at all (kill -9
mid-save included), orphans removed, damage named instead of read as a run without rows."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from indexer import Archive
from indexer.archive.integrity import check_directory
from indexer.audit import saved_runs as audit_runs
from indexer.audit.labelset import inline_labelset
from indexer.audit.runner import run_audit
from indexer.errors import ArchiveDamagedError
from tests.fakes import FakeEncoder
from tests.test_block_scan import _add
from tests.test_pipeline import ROOT

LABELS = inline_labelset(["tone 440", "tone 1200", "tone 3700"], name="tones", mode="multi-label", threshold=0.05)


@pytest.fixture
def arch(tmp_path):
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        _add(archive, 40, np.random.default_rng(0))
        run_audit(archive, LABELS)
    return tmp_path / "arch"


def _files(arch):
    return sorted(p.name for p in (arch / "runs").iterdir())


def test_a_run_is_files_the_catalog_names_and_reads_back_as_saved(arch):
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        [run] = audit_runs.list_runs(archive.catalog)
        named = [f.name for f in archive.catalog.run_file_records([run.id])]
        assert named and sorted(named) == _files(arch)
        rows = audit_runs.results(archive.catalog, run.id, flagged_only=False)
        assert rows.num_rows == 40 * 3 and rows["score"].type == "double"
        again = run_audit(archive, LABELS)
        assert audit_runs.results(archive.catalog, again.id, flagged_only=False).equals(
            audit_runs.results(archive.catalog, run.id, flagged_only=False))


KILLED_SAVE = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
from indexer import Archive
from indexer.archive import catalog, run_files
from indexer.audit.runner import run_audit
from tests.fakes import FakeEncoder
from tests.test_run_files import LABELS
where = {where!r}
if where == "between parts":
    run_files.MIN_PART_ROWS = 10
    write = run_files.RunFiles._write_part
    def _write_part(self, name, table):
        if name.endswith("-1.parquet"):  # once part 0 is on disk
            first = self.folder / name.replace("-1.parquet", "-0.parquet")
            while not (first.exists() and first.stat().st_size):
                time.sleep(0.001)
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, name, table)
    run_files.RunFiles._write_part = _write_part
else:
    def name_run_files(self, run_id, files):
        os.kill(os.getpid(), signal.SIGKILL)
    catalog.Catalog.name_run_files = name_run_files
with Archive.open({arch!r}, encoder=FakeEncoder()) as archive:
    run_audit(archive, LABELS)
"""


@pytest.mark.parametrize("where", ["between parts", "before the commit"])
def test_a_save_killed_midway_leaves_the_archive_as_before_and_its_files_are_removed_by_the_next(arch, where):
    before = _files(arch)
    done = subprocess.run([sys.executable, "-c", KILLED_SAVE.format(root=str(ROOT), arch=str(arch), where=where)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == -9, done.stderr[-2000:]
    assert len(_files(arch)) > len(before)  # what the killed save wrote: files no run names
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        assert [r.id for r in audit_runs.list_runs(archive.catalog)] == [1]
        assert audit_runs.results(archive.catalog, 1, flagged_only=False).num_rows == 120
        second = run_audit(archive, LABELS)
        assert _files(arch) == sorted(before + [f.name for f in archive.catalog.run_file_records([second.id])])
    assert check_directory(arch).ok


def test_a_results_file_missing_cut_short_or_altered_is_named_not_read_as_empty(arch):
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        [record] = archive.catalog.run_file_records([1])
    path = arch / "runs" / record.name
    data = path.read_bytes()

    path.write_bytes(data[: len(data) // 2])
    with Archive.open(arch, encoder=FakeEncoder()) as archive, pytest.raises(ArchiveDamagedError, match=record.name):
        audit_runs.results(archive.catalog, 1)
    path.unlink()
    with Archive.open(arch, encoder=FakeEncoder()) as archive, pytest.raises(ArchiveDamagedError, match="missing"):
        audit_runs.label_counts(archive.catalog, 1)
    [problem] = check_directory(arch).problems
    assert problem.kind == "results" and record.name in problem.path and "missing" in problem.detail

    altered = bytearray(data)
    altered[len(data) // 3] ^= 0xFF  # within the size: only the CRC tells
    path.write_bytes(bytes(altered))
    [problem] = check_directory(arch).problems
    assert problem.kind == "results" and "altered" in problem.detail and "run 1" in problem.detail
    path.write_bytes(data)
    assert check_directory(arch).ok


def test_a_run_without_rows_reads_as_empty_saved_now_or_migrated_from_a_table(arch):
    """A run whose filter let nothing in has no rows: it still has a file (an empty one), so it is
    never taken for damage, whether saved now or moved out of the old results table by migration 013."""
    import duckdb

    from indexer.search.filtering import SearchFilters
    from tests.fakes import as_schema_11

    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        empty = run_audit(archive, LABELS, SearchFilters(where="duration_s < 0"))
        assert audit_runs.results(archive.catalog, empty.id, flagged_only=False).num_rows == 0
    con = duckdb.connect(str(arch / "catalog.duckdb"))
    as_schema_11(con)  # the results table is back, empty: every run now has no rows there
    con.close()
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        for run in audit_runs.list_runs(archive.catalog):
            assert audit_runs.results(archive.catalog, run.id, flagged_only=False).num_rows == 0
            assert audit_runs.label_counts(archive.catalog, run.id) == []
        run_audit(archive, LABELS)  # the files the old catalog named are orphans now: removed by this save
    assert check_directory(arch).ok
