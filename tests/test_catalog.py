"""Catalog: migrations, metadata import and joins, and the torch-free engine invariant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from indexer import Archive
from indexer.archive.catalog import Catalog
from indexer.errors import ArchiveBusyError, ArchiveNotFoundError, MetadataError
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder

ROOT = Path(__file__).resolve().parents[1]


def test_migrations_are_numbered_and_applied_once(tmp_path):
    catalog = Catalog.open(tmp_path)
    assert catalog.schema_version() >= 1
    applied = catalog.con.execute("SELECT count(*) FROM schema_migrations").fetchall()[0][0]
    catalog.migrate()
    assert catalog.con.execute("SELECT count(*) FROM schema_migrations").fetchall()[0][0] == applied
    catalog.close()


@pytest.fixture
def indexed(tmp_path):
    drop = tmp_path / "drop"
    write_sequence(drop / "north" / "a.wav", [(440, 3)])
    write_sequence(drop / "south" / "a.wav", [(440, 3)], rate=8000)
    write_sequence(drop / "b.wav", [(1200, 3)])
    archive = Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True)
    archive.index([drop])
    yield archive, drop
    archive.close()


def test_metadata_joins_by_path_before_file_name(indexed, tmp_path):
    archive, drop = indexed
    csv = drop / "meta.csv"
    csv.write_text("path,site,calls,date\nnorth/a.wav,N,3,2024-05-01\n./south/../south/a.wav,S,4,2024-05-02\nb.wav,B,5,2024-05-03\n")
    assert archive.catalog.import_metadata(csv) == 3
    rows = dict(archive.catalog.con.execute("SELECT path, site FROM recordings_view").fetchall())
    assert rows[str(drop / "north" / "a.wav")] == "N"
    assert rows[str(drop / "south" / "a.wav")] == "S"
    assert rows[str(drop / "b.wav")] == "B"
    types = archive.catalog.view_columns()
    assert types["calls"] == "BIGINT" and types["date"] == "DATE"


def test_metadata_reimport_replaces_rows_and_adds_columns(indexed):
    archive, drop = indexed
    (drop / "m1.csv").write_text("file,agent\nb.wav,A1\n")
    (drop / "m2.csv").write_text("file,agent,team\nb.wav,A2,red\n")
    archive.catalog.import_metadata(drop / "m1.csv")
    archive.catalog.import_metadata(drop / "m2.csv")
    rows = archive.catalog.con.execute("SELECT agent, team FROM recordings_view WHERE file_name = 'b.wav'").fetchall()
    assert rows == [("A2", "red")]
    assert archive.catalog.con.execute("SELECT count(*) FROM recordings_view").fetchall()[0][0] == 3


def test_metadata_column_clashing_with_catalog_is_renamed(indexed):
    archive, drop = indexed
    (drop / "m.csv").write_text("file,duration_s\nb.wav,99\n")
    archive.catalog.import_metadata(drop / "m.csv")
    row = archive.catalog.con.execute("SELECT duration_s, meta_duration_s FROM recordings_view WHERE file_name='b.wav'").fetchall()
    assert row[0][0] == pytest.approx(3.0) and row[0][1] == 99


def test_metadata_without_key_column_is_refused(indexed):
    archive, drop = indexed
    (drop / "bad.csv").write_text("agent,site\nA1,N\n")
    with pytest.raises(MetadataError, match="needs a column naming the recording"):
        archive.catalog.import_metadata(drop / "bad.csv")
    with pytest.raises(MetadataError, match="does not exist"):
        archive.catalog.import_metadata(drop / "missing.csv")


def test_opening_a_missing_archive_says_how_to_make_one(tmp_path):
    with pytest.raises(ArchiveNotFoundError, match="soundtrace index"):
        Archive.open(tmp_path / "nothing")


def test_second_writer_is_told_the_archive_is_busy(indexed, tmp_path):
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from indexer.archive.catalog import Catalog; Catalog.open({str(tmp_path / 'arch')!r}, wait_s=0.5)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert ArchiveBusyError.__name__ in result.stderr and "in use by another soundtrace process" in result.stderr


HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from indexer.archive.catalog import Catalog
catalog = Catalog.open({arch!r})
print("holding", flush=True)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    catalog.con.execute("SELECT count(*) FROM windows").fetchall()
    time.sleep(0.2)
    catalog.yield_lock()  # and straight back in on the next loop: no gap for a polling reader
"""


def test_a_waiting_reader_gets_the_catalog_from_a_writer_that_yields_and_retakes_it(indexed, tmp_path):
    archive, _ = indexed
    archive.close()
    arch = tmp_path / "arch"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(root=str(ROOT), arch=str(arch))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        for _ in range(3):
            reader = Catalog.open(arch, read_only=True, wait_s=5)
            assert reader.one("SELECT count(*) FROM windows")[0] > 0
            reader.close()
        assert holder.poll() is None, "the holder must still be running: each handoff went both ways"
    finally:
        holder.kill()
        holder.wait()


def test_audit_results_keep_their_rows_through_the_key_dropped_and_the_move_to_files(tmp_path, monkeypatch):
    """Migration 004 rebuilds audit_results without its primary key, 013 moves the rows into files
    the catalog names; saved runs survive both, to the bit."""
    from indexer.archive.run_files import RunFiles
    from indexer.audit.saved_runs import rows_query

    import indexer.archive.schema as schema_module

    every = schema_module.migration_files()
    monkeypatch.setattr(schema_module, "migration_files", lambda: [m for m in every if m[0] < 4])
    old = Catalog.open(tmp_path)
    row = [1, 7, "dog", 0.5, 0.625, 0.75, 80.0, 3, 1.0, 2.0, 0, 1, 1.0, True, True]  # scores were float32
    old.con.execute(f"INSERT INTO audit_results VALUES ({', '.join('?' * len(row))})", row).fetchall()
    old.close()
    monkeypatch.setattr(schema_module, "migration_files", lambda: every)
    new = Catalog.open(tmp_path)
    assert new.schema_version() == max(v for v, _ in every)
    assert rows_query(new, [1], "SELECT * FROM audit_results") == [tuple(row)]
    assert not new.has_table("audit_results") and len(new.run_file_records([1])) == 1
    assert RunFiles(tmp_path).orphans({f.name for f in new.run_file_records()}) == []
    new.close()
