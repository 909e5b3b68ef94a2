"""Damage done to an archive's files from outside is named, never answered from, and
``check --repair`` rebuilds what can be rebuilt (issue 20, items 1-6)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer import Archive
from indexer.archive import checksums, segments
from indexer.archive.catalog import CATALOG_FILE
from indexer.archive.manifest import MANIFEST_FILE
from indexer.archive.segments import SEGMENTS_DIR
from indexer.cli.main import cli
from indexer.errors import ArchiveDamagedError, ArchiveWriteError
from tests import hostile_inputs
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder, as_schema_11

FREQS = [300, 440, 700, 1200, 2000, 3700]


@pytest.fixture
def small_segments(monkeypatch):
    """Eight rows a segment and four a chunk, so a few recordings span several of each."""
    monkeypatch.setattr(segments, "SEGMENT_ROWS", 8)
    monkeypatch.setattr(checksums, "CHUNK_ROWS", 4)


@pytest.fixture
def archive_dir(tmp_path, small_segments):
    drop = tmp_path / "drop"
    for i, freq in enumerate(FREQS):
        write_sequence(drop / f"rec{i}.wav", [(freq, 10), (FREQS[(i + 2) % len(FREQS)], 10)])
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
    return arch


def answers(arch: Path) -> list[tuple[str, float]]:
    with Archive.open(arch, encoder=FakeEncoder(), read_only=True) as archive:
        return [(Path(h.path).name, round(h.score, 5)) for h in archive.search("tone 1200", k=6)]


def segment_files(arch: Path) -> list[Path]:
    return sorted((arch / SEGMENTS_DIR).glob("seg-*.faiss"))


def refused(arch: Path, needle: str) -> str:
    """Search, index and audit each refuse with one sentence naming ``needle``."""
    with pytest.raises(ArchiveDamagedError) as searched:
        answers(arch)
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        with pytest.raises(ArchiveDamagedError):
            archive.index([arch.parent / "drop"])
        from indexer.audit.labelset import inline_labelset
        from indexer.audit.runner import run_audit

        with pytest.raises(ArchiveDamagedError):
            run_audit(archive, inline_labelset("tone 440, tone 1200"))
    message = str(searched.value)
    assert needle in message and "\n" not in message and "check --repair" in message
    return message


def test_every_chunk_of_every_segment_has_its_checksum_in_the_catalog(archive_dir):
    with Archive.open(archive_dir, encoder=FakeEncoder(), read_only=True) as archive:
        chunks = archive.catalog.vector_chunks()
        assert sum(c.rows for c in chunks) == archive.catalog.next_window_id() - 1
        assert all(c.rows <= 4 for c in chunks) and len({c.segment for c in chunks}) == len(segment_files(archive_dir))
        report = archive.check()
    assert report.before.ok and report.before.bytes_read == sum(c.rows for c in chunks) * 2 * FakeEncoder().identity.dim


def test_a_missing_segment_is_named_then_its_recordings_are_embedded_again(archive_dir):
    before = answers(archive_dir)
    victim = segment_files(archive_dir)[1]
    victim.unlink()
    refused(archive_dir, victim.name)
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        report = archive.check(repair=True)
        assert [p.kind for p in report.before.problems] == ["missing-file"]
        assert report.reembedded and not report.to_reindex and report.after.ok
    assert answers(archive_dir) == before  # the same recordings and scores, from new rows


def test_vectors_replaced_by_a_file_is_named_and_repaired(archive_dir):
    before = answers(archive_dir)
    shutil.rmtree(archive_dir / SEGMENTS_DIR)
    (archive_dir / SEGMENTS_DIR).write_text("not a folder")
    refused(archive_dir, "seg-")
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        assert archive.check(repair=True).after.ok
    assert answers(archive_dir) == before


def test_a_renamed_segment_is_never_adopted_and_gets_its_name_back(archive_dir):
    before = answers(archive_dir)
    first, second = segment_files(archive_dir)[:2]
    shifted = first.with_name(segments.segment_name(int(first.name[4:16]) + 1))
    os.rename(first, shifted)
    refused(archive_dir, first.name)
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        report = archive.check(repair=True)
        assert {p.kind for p in report.before.problems} == {"missing-file", "stray-file"}
        assert any("renamed back" in line for line in report.done) and not report.reembedded and report.after.ok
    assert answers(archive_dir) == before and first.exists() and not shifted.exists()


def test_a_stray_segment_of_random_bytes_is_never_read_and_is_moved_aside(archive_dir):
    before = answers(archive_dir)
    stray = archive_dir / SEGMENTS_DIR / segments.segment_name(3)
    stray.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert answers(archive_dir) == before  # not adopted: the catalog never named it
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        archive.index([archive_dir.parent / "drop"])
        assert [p.kind for p in archive.check().before.problems] == ["stray-file"]
        assert archive.check(repair=True).after.ok
    assert not stray.exists() and (archive_dir / SEGMENTS_DIR / "stray" / stray.name).exists()
    assert answers(archive_dir) == before


def test_a_damaged_header_is_named_then_written_again(archive_dir):
    before = answers(archive_dir)
    victim = segment_files(archive_dir)[0]
    with open(victim, "r+b") as fh:
        fh.write(b"JUNK")
    refused(archive_dir, victim.name)
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        report = archive.check(repair=True)
        assert [p.kind for p in report.before.problems] == ["header"] and report.after.ok and not report.reembedded
    assert answers(archive_dir) == before


def test_flipped_bytes_inside_the_rows_are_found_by_check_and_embedded_again(archive_dir):
    before = answers(archive_dir)
    victim = segment_files(archive_dir)[0]  # eight rows
    offset = len(segments._header(FakeEncoder().identity.dim)) + 5 * 2 * FakeEncoder().identity.dim + 3
    with open(victim, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x40]))
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        problems = archive.check().before.problems
        assert [p.kind for p in problems] == ["checksum"] and victim.name in problems[0].detail
        first = int(victim.name[4:16])
        assert problems[0].window_ids == (first + 4, first + 8)  # the one chunk holding row 5
        report = archive.check(repair=True)
        assert report.reembedded and report.after.ok
    assert answers(archive_dir) == before


def test_damaged_rows_whose_audio_is_gone_are_set_aside_and_listed(archive_dir):
    victim = segment_files(archive_dir)[0]
    with open(victim, "r+b") as fh:
        fh.seek(len(segments._header(FakeEncoder().identity.dim)) + 1)
        fh.write(b"\xff\xff")
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        lost = archive.catalog.one("SELECT path FROM recordings r JOIN windows w ON w.recording_id = r.id WHERE w.id = 1")[0]
    Path(lost).unlink()
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        report = archive.check(repair=True)
        assert report.to_reindex == [lost] and report.after.ok
        status, kind = archive.catalog.one("SELECT status, error_kind FROM recordings WHERE path = ?", [lost])
        assert (status, kind) == ("failed", "vectors_damaged")
    assert Path(lost).name not in [name for name, _ in answers(archive_dir)]


@pytest.mark.parametrize("content", list(hostile_inputs.DAMAGED_MANIFESTS))
def test_a_damaged_manifest_is_one_sentence_for_every_command(archive_dir, content):
    (archive_dir / MANIFEST_FILE).write_bytes(hostile_inputs.DAMAGED_MANIFESTS[content])
    for args in (["search", "tone", "--archive", archive_dir], ["info", "--archive", archive_dir],
                 ["index", archive_dir.parent / "drop", "--archive", archive_dir], ["check", "--archive", archive_dir]):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 1, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "manifest" in result.output and "Traceback" not in result.output


def test_a_lock_file_made_a_folder_is_one_sentence(archive_dir):
    lock = archive_dir / "writer.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()
    result = CliRunner().invoke(cli, ["index", str(archive_dir.parent / "drop"), "--archive", str(archive_dir)])
    assert result.exit_code == 1 and "writer.lock is not a plain file" in result.output and "Traceback" not in result.output


def test_a_deleted_catalog_is_named_and_the_vectors_are_kept(archive_dir):
    (archive_dir / CATALOG_FILE).unlink()
    kept = {p: p.read_bytes() for p in segment_files(archive_dir)}
    with pytest.raises(ArchiveDamagedError, match="lost its catalog"):
        Archive.open(archive_dir, encoder=FakeEncoder(), create=True)
    result = CliRunner().invoke(cli, ["check", "--archive", str(archive_dir)])
    assert result.exit_code == 1 and "catalog" in result.output and "is missing" in result.output
    assert {p: p.read_bytes() for p in segment_files(archive_dir)} == kept


def test_a_full_disk_while_writing_vectors_is_one_sentence_and_changes_nothing(archive_dir, monkeypatch, tmp_path):
    write_sequence(archive_dir.parent / "drop" / "new.wav", [(6000, 10)])
    with Archive.open(archive_dir, encoder=FakeEncoder(), read_only=True) as archive:
        windows = archive.catalog.window_count()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segments.os, "fsync", full)
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        with pytest.raises(ArchiveWriteError, match="No space left on device"):
            archive.index([archive_dir.parent / "drop"])
    monkeypatch.undo()
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        assert archive.catalog.window_count() == windows and archive.check().before.ok
        archive.index([archive_dir.parent / "drop"])
        assert archive.catalog.window_count() > windows and archive.check().before.ok


def test_the_cli_check_names_damage_and_repair_mends_it(archive_dir):
    ok = CliRunner().invoke(cli, ["check", "--archive", str(archive_dir), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"] is True
    victim = segment_files(archive_dir)[0]
    with open(victim, "r+b") as fh:
        fh.write(b"JUNK")
    bad = CliRunner().invoke(cli, ["check", "--archive", str(archive_dir)])
    assert bad.exit_code == 1 and f"{victim} has a damaged header" in bad.output
    mended = CliRunner().invoke(cli, ["check", "--archive", str(archive_dir), "--repair", "-q"])
    assert mended.exit_code == 0 and "written again" in mended.output and "whole again" in mended.output, mended.output


# --- the ANN index: its file is checked against the catalog, never trusted blindly ---------------


def _ann_archive(tmp_path):
    from tests.test_vector_storage import LOW, _clustered

    archive = _clustered(tmp_path / "ann", 300, LOW)
    archive.maintain_ann()
    return archive


def test_an_altered_ann_file_is_never_searched_and_check_repair_builds_it_again(tmp_path):
    from indexer.search.ranking import search_vector

    with _ann_archive(tmp_path) as archive:
        query = archive.window_vectors([42])[0]
        exact = [(h.best.window_id, h.score) for h in search_vector(archive, query, k=5, exact=True)]
        path = archive.directory / SEGMENTS_DIR / archive.store.ann.record.file
    with open(path, "ab") as fh:
        fh.write(b"tail added from outside")
    from tests.test_vector_storage import LOW

    with Archive.open(tmp_path / "ann", encoder=FakeEncoder(), store_config=LOW) as archive:
        assert archive.store.ann is None and "has" in archive.store.ann_damage  # its size is not the catalog's
        assert "the ANN index is not used" in archive.info().index_factory
        assert [(h.best.window_id, h.score) for h in search_vector(archive, query, k=5)] == exact  # the exact scan
        assert [p.kind for p in archive.check().before.problems] == ["ann"]
        report = archive.check(repair=True)
        assert report.after.ok and archive.store.ann is not None


def test_the_ann_file_is_read_on_the_first_search_and_one_faiss_cannot_read_is_named_not_searched(tmp_path):
    """Opening reads no ANN file (1.4 GB at 10M windows); a file of the right size that FAISS
    cannot read is found on the first search: answered exactly, named by info and check, rebuilt."""
    from indexer.search.ranking import search_vector
    from tests.test_vector_storage import LOW

    with _ann_archive(tmp_path) as archive:
        query = archive.window_vectors([42])[0]
        exact = [(h.best.window_id, h.score) for h in search_vector(archive, query, k=5, exact=True)]
        path = archive.directory / SEGMENTS_DIR / archive.store.ann.record.file
    with Archive.open(tmp_path / "ann", encoder=FakeEncoder(), store_config=LOW) as archive:
        assert archive.store.ann_trusted and not archive.store.ann.loaded  # opened without reading it
        assert [(h.best.window_id, h.score) for h in search_vector(archive, query, k=5)] == exact
        assert archive.store.ann.loaded
    path.write_bytes(bytes(path.stat().st_size))  # zeros: the size the catalog recorded, no index
    with Archive.open(tmp_path / "ann", encoder=FakeEncoder(), store_config=LOW) as archive:
        assert [(h.best.window_id, h.score) for h in search_vector(archive, query, k=5)] == exact  # the exact scan
        assert archive.store.ann is None and "cannot be read" in archive.store.ann_damage
        assert "the ANN index is not used" in archive.info().index_factory
        assert [p.kind for p in archive.check().before.problems] == ["ann"]
        assert archive.check(repair=True).after.ok and archive.store.ann is not None
        assert [(h.best.window_id, h.score) for h in search_vector(archive, query, k=5)] == exact


def test_an_ann_holding_a_window_twice_is_named_and_its_candidates_are_counted_once(tmp_path):
    import faiss

    from indexer.archive.ann import AnnEntry

    with _ann_archive(tmp_path) as archive:
        record = archive.store.ann.record
        path = archive.directory / SEGMENTS_DIR / record.file
        index = faiss.read_index(str(path))
        again = np.arange(1, 101, dtype=np.int64)
        index.add_with_ids(archive.window_vectors(again), again)  # what a tampered covers_below used to cause
        faiss.write_index(index, str(path))
        archive.catalog.set_ann_entry(AnnEntry.of_file(record, path))
        archive.refresh()
        candidates = archive.store.ann.candidates(archive.window_vectors([5])[0], 10, None)
        assert len(candidates) == len(np.unique(candidates))
        problems = archive.check().before.problems
        assert [p.kind for p in problems] == ["ann"] and "100 window ids twice" in problems[0].detail


def test_an_ann_record_left_beside_the_vectors_is_not_read(tmp_path):
    """Before migration 012 ``ann.json`` said what the index covered; lowering its covers_below made
    ``index`` add every window again. The catalog holds the record now."""
    with _ann_archive(tmp_path) as archive:
        ntotal = archive.store.ann.index.ntotal
        (archive.directory / SEGMENTS_DIR / "ann.json").write_text(json.dumps({"covers_below": 1, "recall": "high"}))
        archive.refresh()
        archive.maintain_ann()
        assert archive.store.ann.index.ntotal == ntotal and archive.check().before.ok


# --- the whole hostile suite of damage: named, never answered from, mended ---------------------


@pytest.mark.parametrize("damage", list(hostile_inputs.ARCHIVE_DAMAGES))
def test_each_damage_is_named_never_answered_from_and_mended(archive_dir, damage):
    before = answers(archive_dir)
    hostile_inputs.ARCHIVE_DAMAGES[damage](archive_dir)
    try:
        assert answers(archive_dir) == before  # only a file nobody reads may leave answers standing
    except ArchiveDamagedError as exc:
        assert "\n" not in str(exc) and "check --repair" in str(exc)
    named = CliRunner().invoke(cli, ["check", "--archive", str(archive_dir), "-q"])
    assert named.exit_code == 1 and "✗" in named.output and "Traceback" not in named.output
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        assert archive.check(repair=True).after.ok
    assert answers(archive_dir) == before


REPAIR_KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from indexer import Archive
from indexer.archive import checksums, segments, storage
from indexer.indexing import repair
from tests.fakes import FakeEncoder

segments.SEGMENT_ROWS, checksums.CHUNK_ROWS = 8, 4
stage = {stage!r}
if stage == "after setting aside":
    repair._settle_chunks = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
elif stage == "during re-embedding":
    save = storage.ArchiveStorage.save_files
    def save_then_die(self, *a, **k):
        save(self, *a, **k)
        os.kill(os.getpid(), signal.SIGKILL)
    storage.ArchiveStorage.save_files = save_then_die
with Archive.open({arch!r}, encoder=FakeEncoder()) as archive:
    report = archive.check(repair=True)
    assert report.after.ok, report
"""


@pytest.mark.parametrize("stage", ["after setting aside", "during re-embedding"])
def test_a_repair_killed_at_any_step_is_finished_by_the_next(archive_dir, stage):
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    before = answers(archive_dir)
    hostile_inputs.ARCHIVE_DAMAGES["a byte flipped in a segment's rows"](archive_dir)
    hostile_inputs.ARCHIVE_DAMAGES["a segment deleted"](archive_dir)
    code = REPAIR_KILLER.format(root=str(root), arch=str(archive_dir), stage=stage)
    died = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert died.returncode == -signal.SIGKILL, died.stderr
    finished = subprocess.run([sys.executable, "-c", code.replace(f"stage = {stage!r}", "stage = None")], cwd=root,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert answers(archive_dir) == before


def test_a_segment_that_filled_says_so_in_its_header(archive_dir):
    """A segment that rolled over used to keep the row count of its last commit before filling,
    so every reader rebuilt its tail in memory on open."""
    with Archive.open(archive_dir, encoder=FakeEncoder(), read_only=True) as archive:
        stored = archive.store.segments
        assert len(stored) >= 2 and all(segments.header_rows(s) == s.rows for s in stored)
        assert all(tail is None for _, tail, _ in archive.store._open_files())


# --- what a review found: archives from before the checksums, and damage that hid -----------------


def _as_before_checksums(arch: Path) -> None:
    """The archive as schema 11 left it: no chunk CRCs, no ANN entry in the catalog."""
    import duckdb

    con = duckdb.connect(str(arch / CATALOG_FILE))
    as_schema_11(con)
    con.close()
    manifest = json.loads((arch / MANIFEST_FILE).read_text())
    (arch / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 2}))


def test_check_migrates_an_archive_from_before_the_checksums(archive_dir):
    _as_before_checksums(archive_dir)
    result = CliRunner().invoke(cli, ["check", "--archive", str(archive_dir), "-q"])
    assert result.exit_code == 0 and "the archive is whole" in result.output, result.output


def test_an_archive_damaged_before_the_checksums_still_opens_and_is_mended(archive_dir):
    before = answers(archive_dir)
    _as_before_checksums(archive_dir)
    segment_files(archive_dir)[1].unlink()
    with pytest.raises(ArchiveDamagedError):
        answers(archive_dir)  # migrated, then named
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        assert archive.check(repair=True).after.ok
    assert answers(archive_dir) == before


def test_a_segment_renamed_past_the_counter_is_kept_and_renamed_back(archive_dir):
    before = answers(archive_dir)
    first = segment_files(archive_dir)[0]
    far = first.with_name(segments.segment_name(10_000))
    os.rename(first, far)
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        with pytest.raises(ArchiveDamagedError):
            archive.begin_write()  # never deletes the file as a killed run's leftovers
        report = archive.check(repair=True)
        assert any("renamed back" in line for line in report.done) and not report.reembedded and report.after.ok
    assert answers(archive_dir) == before


def test_a_recording_set_aside_is_embedded_again_by_a_plain_index_once_its_audio_is_back(archive_dir, tmp_path):
    victim = segment_files(archive_dir)[0]
    with open(victim, "r+b") as fh:
        fh.seek(len(segments._header(FakeEncoder().identity.dim)) + 1)
        fh.write(b"\xff\xff")
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        lost = Path(archive.catalog.one("SELECT path FROM recordings r JOIN windows w ON w.recording_id = r.id WHERE w.id = 1")[0])
    kept = tmp_path / "kept.wav"
    shutil.copy2(lost, kept)
    lost.unlink()
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        assert archive.check(repair=True).to_reindex == [str(lost)]
    shutil.copy2(kept, lost)  # back, with its old mtime
    with Archive.open(archive_dir, encoder=FakeEncoder()) as archive:
        archive.index([archive_dir.parent / "drop"])
        assert archive.catalog.one("SELECT status FROM recordings WHERE path = ?", [str(lost)])[0] == "indexed"


def test_an_ann_file_altered_in_place_never_raises_on_search(tmp_path):
    import faiss

    from indexer.search.ranking import search_vector

    with _ann_archive(tmp_path) as archive:
        path = archive.directory / SEGMENTS_DIR / archive.store.ann.record.file
        index = faiss.read_index(str(path))
        ivf = faiss.extract_index_ivf(index)
        listed = next(n for n in range(ivf.nlist) if ivf.invlists.list_size(n))
        ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(listed), ivf.invlists.list_size(listed))
        ids[:] = 10**9  # ids no window has, the file's size unchanged
        faiss.write_index(index, str(path))
        archive.refresh()
        query = archive.window_vectors([7])[0]
        found = search_vector(archive, query, k=5)
        assert found and all(h.best.window_id < archive.catalog.next_window_id() for h in found)
        assert [p.kind for p in archive.check().before.problems] == ["ann"]
