"""Vectors stored once: segment files round trip, kill -9 at each step of a write, the migration
from the catalog-held vectors of schema 5, the ANN index against the exact scan, and audits that
score a window the same whichever others are read with it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from indexer import Archive
from indexer.archive import segments as segments_module
from indexer.archive.ann import LEGACY_RECORD
from indexer.archive.catalog import CATALOG_FILE
from indexer.archive.manifest import FORMAT_VERSION, MANIFEST_FILE
from indexer.archive.records import RecordingRow, WindowRows
from indexer.archive.segments import SEGMENTS_DIR, SegmentFiles
from indexer.archive.vector_store import StoreConfig
from indexer.search.filtering import SearchFilters
from indexer.search.ranking import search_vector
from tests.fakes import DIM, FakeEncoder, as_schema_11
from tests.test_pipeline import ROOT, big_drop, clean_snapshot, make_drop, snapshot  # noqa: F401

# --- segment files ------------------------------------------------------------------------------


def test_vectors_round_trip_across_segment_files(tmp_path, monkeypatch):
    drop = make_drop(tmp_path / "drop")
    with Archive.open(tmp_path / "one", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        expected = [(h.path, h.best.window_id, h.score) for h in archive.search("tone 1200", k=10)]
    monkeypatch.setattr(segments_module, "SEGMENT_ROWS", 3)
    with Archive.open(tmp_path / "many", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        files = SegmentFiles(tmp_path / "many", DIM).listing()
        assert len(files) == 3  # 8 windows, 3 rows a file
        ids = archive.catalog.all_window_ids()
        stored = archive.window_vectors(ids)
        assert stored.dtype == np.float32 and np.array_equal(stored, stored.astype(np.float16).astype(np.float32))
        assert [(h.path, h.best.window_id, h.score) for h in archive.search("tone 1200", k=10)] == expected
    on_disk = sum(path.stat().st_size for _, path in files)
    assert on_disk == 8 * DIM * 2 + 3 * len(segments_module._header(DIM))  # float16, stored once


# --- kill -9 at each step of a write -------------------------------------------------------------

CRASHING_WORKER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from indexer import Archive
from indexer.archive import segments
from indexer.indexing import commits
from tests.fakes import FakeEncoder

commits.COMMIT_EVERY_S = 0  # a round whenever a file is ready,
commits.MAX_ROUND_FILES = 1  # of one file: an append per recording to kill at
target, mode, calls = {target}, {mode!r}, [0]
append, mark = segments.SegmentFiles.append, segments.SegmentFiles.mark_committed

def crashing_append(self, first_id, vectors, committed, last_chunk):
    calls[0] += 1
    if calls[0] == target and mode == "torn write":  # some rows and half of the next, then death
        half = append(self, first_id, vectors[: len(vectors) // 2], committed, last_chunk)
        last = half.segments[-1] if half.segments else (committed[-1] if committed else None)
        path = last.path if last else self.folder / segments.segment_name(first_id)
        with open(path, "ab") as fh:
            fh.write(vectors.astype("float16").tobytes()[: self.dim])
        os.kill(os.getpid(), signal.SIGKILL)
    last = append(self, first_id, vectors, committed, last_chunk)
    if calls[0] == target and mode == "before commit":
        os.kill(os.getpid(), signal.SIGKILL)
    return last

def crashing_mark(self, touched):
    if calls[0] == target and mode == "before header" and touched:
        os.kill(os.getpid(), signal.SIGKILL)
    mark(self, touched)

segments.SegmentFiles.append, segments.SegmentFiles.mark_committed = crashing_append, crashing_mark
with Archive.open({arch!r}, encoder=FakeEncoder(), create=True) as archive:
    archive.index([{drop!r}])
"""


@pytest.mark.parametrize("mode", ["torn write", "before commit", "before header"])
@pytest.mark.parametrize("target", [1, 7, 23])
def test_kill_9_at_each_step_of_a_write_then_rerun_equals_clean_run(big_drop, clean_snapshot, tmp_path, mode, target):
    arch = tmp_path / "arch"
    code = CRASHING_WORKER.format(root=str(ROOT), arch=str(arch), drop=str(big_drop), target=target, mode=mode)
    died = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert died.returncode == -signal.SIGKILL, died.stderr
    with Archive.open(arch, encoder=FakeEncoder(), read_only=True) as archive:  # a reader meanwhile
        ids = archive.catalog.all_window_ids()
        assert np.array_equal(archive.store.ids(), ids)  # exactly the committed windows, no more
        if len(ids):
            newest = archive.window_vectors(ids[-1:])
            scores, found = archive.store.search(newest, 20, exact=True)
            assert ids[-1] in found[0]  # the newest committed window is searchable, header or not
    subprocess.run([sys.executable, "-c", code.replace(f"target, mode, calls = {target}", "target, mode, calls = -1")],
                   cwd=ROOT, check=True, timeout=300)
    assert snapshot(arch) == clean_snapshot


# --- migration from schema 5 (vectors in windows.embedding) -------------------------------------


def _schema_5_copy(source: Path, target: Path) -> None:
    """The archive at ``source`` as today's main before this change wrote it: migrations 001-005,
    float32 vectors in ``windows.embedding``, a version-1 manifest and a FAISS file beside it."""
    target.mkdir(parents=True)
    with Archive.open(source, encoder=FakeEncoder(), read_only=True) as archive:
        ids = archive.catalog.all_window_ids()
        vectors = archive.window_vectors(ids)
    con = duckdb.connect(str(target / CATALOG_FILE))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    folder = ROOT / "indexer" / "archive" / "migrations"
    for version in range(1, 6):
        con.execute(next(folder.glob(f"{version:03d}_*.sql")).read_text())
        con.execute("INSERT INTO schema_migrations VALUES (?, now())", [version])
    con.execute(f"ATTACH '{source / CATALOG_FILE}' AS a (READ_ONLY)")
    con.execute("INSERT INTO recordings SELECT * FROM a.recordings")
    con.register("_vectors", pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)}))
    con.execute("INSERT INTO windows SELECT w.*, v.embedding FROM a.windows w JOIN _vectors v USING (id)")
    con.execute("DELETE FROM state")
    con.execute("INSERT INTO state SELECT * FROM a.state")
    con.execute("CREATE OR REPLACE TABLE metadata AS SELECT * FROM a.metadata")
    con.execute("INSERT INTO text_vectors SELECT * FROM a.text_vectors")
    con.close()
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    manifest.update(format_version=1, index_factory="Flat", index_generation=3)
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    (target / "vectors.faiss").write_bytes(b"the float32 copy of the old layout")


@pytest.fixture
def migrated_pair(tmp_path):
    drop = make_drop(tmp_path / "drop")
    (drop / "meta.csv").write_text("file,agent\na.wav,A1\nb.wav,A2\n")
    source = tmp_path / "new"
    with Archive.open(source, encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        archive.import_metadata(drop / "meta.csv")
        archive.delete_recordings([archive.catalog.one("SELECT id FROM recordings WHERE file_name = 'b.wav'")[0]])
        archive.search("tone 440")  # remembered text
    old = tmp_path / "old"
    _schema_5_copy(source, old)
    return source, old


def _results(directory: Path, read_only: bool = True):
    with Archive.open(directory, encoder=FakeEncoder(), read_only=read_only) as archive:
        return [
            [(h.path, h.best.window_id, h.score, h.metadata.get("agent")) for h in archive.search(text, k=10)]
            for text in ("tone 440", "tone 1200", "tone 3700")
        ] + [[(h.path, h.score) for h in archive.search("tone 440", where="agent = 'A1'")]]


def test_an_archive_from_schema_5_is_migrated_in_place_with_the_same_results(migrated_pair):
    source, old = migrated_pair
    expected = _results(source)
    assert _results(old) == expected  # a read-only open migrates first, under the writer lock
    con = duckdb.connect(str(old / CATALOG_FILE), read_only=True)
    columns = [r[0] for r in con.execute("DESCRIBE windows").fetchall()]
    version = con.execute("SELECT max(version) FROM schema_migrations").fetchall()[0][0]
    dead = con.execute("SELECT count(*) FROM dead_windows").fetchall()[0][0]
    con.close()
    assert "embedding" not in columns and version >= 6 and dead == 1  # b.wav's window: a gap, now a dead row
    assert not (old / "vectors.faiss").exists() and json.loads((old / MANIFEST_FILE).read_text())["format_version"] == FORMAT_VERSION
    assert _results(old, read_only=False) == expected
    with Archive.open(old, encoder=FakeEncoder(), read_only=True) as archive:
        assert archive.check().before.ok  # migration 012 recorded the checksums of the rows 006 wrote


def test_a_migration_killed_before_its_commit_is_done_again(migrated_pair, monkeypatch):
    source, old = migrated_pair
    from indexer.archive import vector_migration

    real = vector_migration.move_vectors

    def moved_then_died(con, directory):
        real(con, directory)
        raise KeyboardInterrupt  # the process dies after writing segments, before the SQL step commits

    monkeypatch.setattr(vector_migration, "move_vectors", moved_then_died)
    with pytest.raises(KeyboardInterrupt):
        Archive.open(old, encoder=FakeEncoder())
    assert (old / SEGMENTS_DIR).is_dir()
    con = duckdb.connect(str(old / CATALOG_FILE), read_only=True)
    assert "embedding" in [r[0] for r in con.execute("DESCRIBE windows").fetchall()]  # still schema 5
    con.close()
    monkeypatch.setattr(vector_migration, "move_vectors", real)
    assert _results(old) == _results(source)


# --- the ANN index --------------------------------------------------------------------------------


def test_an_archive_from_schema_11_gets_its_checksums_and_keeps_its_ann(tmp_path):
    """Before migration 012 the catalog named no segment file and the ANN's record was ann.json."""
    with _clustered(tmp_path / "arch", 300, LOW) as archive:
        record = archive.maintain_ann()
        expected = archive.search("tone 440", k=5)
    con = duckdb.connect(str(tmp_path / "arch" / CATALOG_FILE))
    (tmp_path / "arch" / SEGMENTS_DIR / LEGACY_RECORD).write_text(record.to_json())
    as_schema_11(con)
    con.close()
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), store_config=LOW, read_only=True) as archive:
        assert archive.store.ann.record == record and archive.check().before.ok
        assert [(h.path, h.score) for h in archive.search("tone 440", k=5)] == [(h.path, h.score) for h in expected]

CLUSTERS, PER_RECORDING = 40, 6


def _clustered(directory: Path, recordings: int, config: StoreConfig, seed: int = 0, start: int = 0) -> Archive:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    archive = Archive.open(directory, encoder=FakeEncoder(), create=True, store_config=config)
    rows, wins = [], []
    for r in range(start, start + recordings):
        vectors = centres[r % CLUSTERS] + 0.35 * rng.standard_normal((PER_RECORDING, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows.append(RecordingRow(path=f"/calls/{r:05d}.wav", content_hash=None, size_bytes=0, mtime=0.0, status="indexed",
                                 duration_s=60.0))
        zeros = np.zeros(PER_RECORDING)
        wins.append(WindowRows(np.zeros(PER_RECORDING, np.int16), np.arange(PER_RECORDING) * 10.0,
                               np.arange(1, PER_RECORDING + 1) * 10.0, zeros, zeros, zeros, zeros, vectors))
    archive.add_recordings(rows, wins)
    csv = directory / "sites.csv"
    csv.write_text("path,site\n" + "".join(f"/calls/{r:05d}.wav,{'small' if r % 50 == 0 else 'big'}\n"
                                           for r in range(start + recordings)))
    archive.import_metadata(csv)
    return archive


LOW = StoreConfig(ann_min_windows=1_000, filtered_exact_max=100)


def _overlap(a, b) -> float:
    return len({h.best.window_id for h in a} & {h.best.window_id for h in b}) / max(len(b), 1)


def test_the_ann_is_built_above_the_threshold_and_agrees_with_the_exact_scan(tmp_path):
    with _clustered(tmp_path / "arch", 500, LOW) as archive:
        assert archive.store.ann is None
        record = archive.maintain_ann()
        assert record is not None and record.recall >= 0.95 and record.recall_depth == 50 and record.windows == 3000
        assert archive.info().ann == record and "IVF" in archive.info().index_factory
        queries = archive.window_vectors(np.arange(1, 3001, 150))
        overlaps = []
        for query in queries:
            fast = search_vector(archive, query, k=10, windows_per_recording=1)
            exact = search_vector(archive, query, k=10, windows_per_recording=1, exact=True)
            overlaps.append(_overlap(fast, exact))
            common = {h.best.window_id: h.score for h in exact}
            assert all(h.score == common[h.best.window_id] for h in fast if h.best.window_id in common)  # one arithmetic
        assert np.mean(overlaps) >= 0.9
        for where in ("site = 'small'", "site = 'big'"):  # 2%: exact over those windows; 98%: the ANN, filtered
            filters = SearchFilters(where=where)
            fast = search_vector(archive, queries[0], k=10, filters=filters, windows_per_recording=1)
            exact = search_vector(archive, queries[0], k=10, filters=filters, windows_per_recording=1, exact=True)
            assert all(h.metadata["site"] == where.split("'")[1] for h in fast)
            assert _overlap(fast, exact) >= (1.0 if "small" in where else 0.8)


def test_new_windows_are_found_before_the_ann_is_extended(tmp_path):
    with _clustered(tmp_path / "arch", 500, LOW) as archive:
        archive.maintain_ann()
    with _clustered(tmp_path / "arch", 300, LOW, seed=1, start=500) as archive:
        assert archive.store.ann.covers_below == 3001  # the new windows are past the index: scanned exactly
        newest = archive.window_vectors([archive.catalog.next_window_id() - 1])[0]
        assert search_vector(archive, newest, k=1, windows_per_recording=1)[0].best.window_id == archive.catalog.next_window_id() - 1
        record = archive.maintain_ann()
        assert record.covers_below == archive.catalog.next_window_id() and record.windows == 4800
        assert record.recall >= 0.95
        assert len(list((tmp_path / "arch" / SEGMENTS_DIR).glob("ann-*"))) == 1  # the old file is gone


ANN_KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from indexer import Archive
from indexer.archive.vector_store import StoreConfig
from tests.fakes import FakeEncoder

def die(stage, done, total):
    if stage == {stage!r}:
        os.kill(os.getpid(), signal.SIGKILL)

with Archive.open({arch!r}, encoder=FakeEncoder(), store_config=StoreConfig(ann_min_windows=1000)) as archive:
    archive.maintain_ann(die)
"""


@pytest.mark.parametrize("stage", ["adding windows to the ANN index", "measuring ANN recall"])
def test_kill_9_during_an_ann_rebuild_leaves_searches_working(tmp_path, stage):
    with _clustered(tmp_path / "arch", 500, LOW) as archive:
        first = archive.maintain_ann()
        query = archive.window_vectors([42])[0]
        expected = [h.best.window_id for h in search_vector(archive, query, k=5, exact=True)]
    with _clustered(tmp_path / "arch", 500, LOW, seed=2, start=500):  # enough new windows to rebuild
        pass
    code = ANN_KILLER.format(root=str(ROOT), arch=str(tmp_path / "arch"), stage=stage)
    died = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert died.returncode == -signal.SIGKILL, died.stderr
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), read_only=True) as archive:
        assert archive.store.ann.record == first  # still the index that was in force
        assert [h.best.window_id for h in search_vector(archive, query, k=5)][:1] == expected[:1]
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), store_config=LOW) as archive:
        again = archive.maintain_ann()
    assert again.windows == 6000
    names = sorted(p.name for p in (tmp_path / "arch" / SEGMENTS_DIR).iterdir())
    assert [n for n in names if n.startswith("ann-")] == [again.file] and LEGACY_RECORD not in names


# --- audits over the stored float16 rows -----------------------------------------------------------


def test_an_audit_scores_each_window_the_same_whichever_others_are_read(tmp_path, monkeypatch):
    """Blocks are aligned to the segments, so a standing audit over a few recordings, a filtered
    run and a full run agree bit for bit, ties at the cutoffs included."""
    from indexer.audit import runner
    from indexer.audit.labelset import inline_labelset

    monkeypatch.setattr(runner, "BLOCK_ROWS", 64)
    with _clustered(tmp_path / "arch", 120, StoreConfig()) as archive:
        original = archive.catalog.one("SELECT id FROM recordings WHERE path = '/calls/00007.wav'")[0]
        copy = archive.catalog.window_ids(original)
        zeros = np.zeros(len(copy))
        dupes = archive.add_recordings(  # the same vectors again: ties for every label, at every cutoff
            [RecordingRow(path="/calls/copy.wav", content_hash=None, size_bytes=0, mtime=0.0, status="indexed", duration_s=60.0)],
            [WindowRows(np.zeros(len(copy), np.int16), zeros, zeros + 10, zeros, zeros, zeros, zeros, archive.window_vectors(copy))],
        )[0]
        names = ["tone 440", "tone 1200", "tone 3700"]
        ranked = runner.score(archive, inline_labelset(names, mode="multi-label", threshold="top 10%"))
        at = np.searchsorted(ranked.recording_ids, [original, dupes])
        assert np.array_equal(ranked.score[at[0]], ranked.score[at[1]])
        cutoff = float(ranked.score[at[0]].max())  # a cutoff exactly at the copies' tied best score
        labelset = inline_labelset(names, mode="multi-label", threshold=cutoff)
        full = runner.score(archive, labelset)
        assert full.flagged[at].any(axis=1).all()  # both copies reach it (>=), nothing rounds them apart
        chosen = np.array([dupes, original, 3, 64, 65, 119], np.int64)
        part = runner.score(archive, labelset, recording_ids=chosen)
        rows = np.searchsorted(full.recording_ids, part.recording_ids)
        for field in ("score", "probability", "confidence", "best_window", "best_start_s", "flagged_windows", "flagged"):
            assert np.array_equal(getattr(part, field), getattr(full, field)[rows]), field
        windows = runner.collect_windows(archive)
        queries = runner.label_queries(runner.label_vectors(archive.embed_text, labelset))
        stored = archive.window_vectors(windows.ids)
        reference = (queries.astype(np.float64) @ stored.T.astype(np.float64))
        assert np.abs(runner.similarities(archive, queries, windows) - reference).max() < 1e-5


def test_a_remembered_filter_answer_is_dropped_when_the_catalog_changes(tmp_path):
    from indexer.search.ranking import allowed_window_ids

    with _clustered(tmp_path / "arch", 100, StoreConfig()) as archive:
        filters = SearchFilters(where="site = 'small'")
        first = allowed_window_ids(archive, filters)
        assert allowed_window_ids(archive, filters) is first  # asked again: remembered
        assert len(first) == 2 * PER_RECORDING  # recordings 0 and 50
        (tmp_path / "more.csv").write_text("path,site\n/calls/00007.wav,small\n")
        archive.import_metadata(tmp_path / "more.csv")
        again = allowed_window_ids(archive, filters)
        assert len(again) == 3 * PER_RECORDING and not first.flags.writeable


def test_a_filter_scanned_by_faiss_gives_what_reading_its_windows_gives(tmp_path, monkeypatch):
    from indexer.archive import vector_store

    with _clustered(tmp_path / "arch", 200, StoreConfig()) as archive:
        query = archive.window_vectors([5])[0]
        filters = SearchFilters(where="site = 'big'")
        read = [(h.best.window_id, h.score) for h in search_vector(archive, query, k=10, filters=filters)]
        monkeypatch.setattr(vector_store, "GATHER_MAX", 0)  # the same filter through FAISS's selector
        scanned = [(h.best.window_id, h.score) for h in search_vector(archive, query, k=10, filters=filters)]
        assert scanned == read and len(read) == 10


def test_recall_counts_a_tied_window_as_found(tmp_path):
    """Twin windows score alike: the exact scan keeps the lower id, an ANN may propose the other."""
    from indexer.archive import ann_build

    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        rng = np.random.default_rng(0)
        base = rng.normal(size=(20, DIM)).astype(np.float32)
        vectors = np.concatenate([base, base])  # window i + 20 is window i's twin
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [RecordingRow(path=f"/r/{i}.wav", content_hash=None, size_bytes=0, mtime=0.0, status="indexed",
                             duration_s=10.0) for i in range(40)]
        zero = np.zeros(1)
        wins = [WindowRows(np.zeros(1, np.int16), zero, zero + 10.0, zero, zero, zero, zero, v[None, :]) for v in vectors]
        archive.add_recordings(rows, wins)
        store = archive.store
        query = (vectors[:1] + 0.3 * rng.normal(size=(1, DIM))).astype(np.float32)
        truth = store.search(query, 3, exact=True)  # the best pair, then one of the next pair

        class Proposer:  # stands in for the ANN: proposes fixed candidates
            def __init__(self, ids):
                self.ids = np.asarray(ids)

            def candidates(self, query, k, allowed, nprobe=None, count=None):
                return self.ids

        twins = np.where(truth[1][0] <= 20, truth[1][0] + 20, truth[1][0] - 20)
        assert set(twins) != set(truth[1][0])  # by id, one of three would be missed
        assert ann_build._recall(store, Proposer(twins), query, truth, 1, 3) == 1.0
        others = np.setdiff1d(np.arange(1, 41), np.concatenate([truth[1][0], twins]))
        assert ann_build._recall(store, Proposer(others), query, truth, 1, 3) == 0.0


def test_an_ann_index_below_its_recall_target_is_kept_but_never_asked(tmp_path, monkeypatch):
    unreachable = StoreConfig(ann_min_windows=1_000, filtered_exact_max=100, target_recall=1.01)
    with _clustered(tmp_path / "arch", 500, unreachable) as archive:
        record = archive.maintain_ann()
        assert record is not None and record.recall < 1.01  # built, measured, and short of the target
        assert archive.store.ann is not None and not archive.store.ann_trusted
        assert "below its recall target" in archive.info().index_factory
        monkeypatch.setattr(type(archive.store.ann), "candidates", lambda *a, **k: pytest.fail("the ANN was asked"))
        query = archive.window_vectors([7])[0]
        assert search_vector(archive, query, k=10) == search_vector(archive, query, k=10, exact=True)


def test_a_window_set_held_as_bits_is_the_same_set_as_its_ids():
    from indexer.archive import window_sets
    from indexer.archive.window_sets import WindowSet

    rng = np.random.default_rng(5)
    ids = np.sort(rng.choice(np.arange(1, 5_000), size=1_700, replace=False))
    as_ids = WindowSet.of(ids, 5_003)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(window_sets, "BITS_FROM", 100)
        as_bits = WindowSet.of(ids, 5_003)
    assert as_bits._bits is not None and as_ids._ids is not None and len(as_bits) == len(as_ids) == 1_700
    assert np.array_equal(as_bits.ids, ids)
    for start, stop in ((1, 1_048), (3, 11), (4_990, 5_010), (0, 5_003), (1_000, 1_000)):
        expected = np.isin(np.arange(start, stop), ids)
        assert np.array_equal(as_bits.mask(start, stop), expected) and np.array_equal(as_ids.mask(start, stop), expected)
    assert np.array_equal(as_bits.bits(5_003), as_ids.bits(5_003))


def test_a_broad_filter_held_as_bits_finds_what_its_ids_find(tmp_path, monkeypatch):
    from indexer.archive import window_sets
    from indexer.search import ranking

    with _clustered(tmp_path / "arch", 500, LOW) as archive:
        archive.maintain_ann()
        query = archive.window_vectors([11])[0]
        filters = SearchFilters(where="site = 'big'")  # 98%: the ANN, with a selector
        with_ids = search_vector(archive, query, k=10, filters=filters)
        exact_with_ids = search_vector(archive, query, k=10, filters=filters, exact=True)
        ranking._filter_cache.clear()
        monkeypatch.setattr(window_sets, "BITS_FROM", 1_000)
        assert ranking.allowed_windows(archive, filters)._bits is not None
        assert search_vector(archive, query, k=10, filters=filters) == with_ids
        assert search_vector(archive, query, k=10, filters=filters, exact=True) == exact_with_ids
