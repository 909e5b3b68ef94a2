"""``soundtrace compact``: the archive rewritten without what deleted and replaced windows left.

A window deleted (its recording pruned, re-indexed or replaced) keeps its row in the append-only
segment files, marked dead, and DuckDB keeps a catalog file at its largest size however much was
deleted. Compaction appends every live row again past the id counter (as an index run appends:
rows a killed run wrote and never committed are cut off by the next writer), writes a new catalog
file beside the old one in which every reference to a window id (windows, the counter, the vector
chunks, marks, audit results' best windows) follows the live rows to their new ids, and then
renames it over the old catalog: that rename is the commit. Killed before it, the old archive is
intact; after it, the new one is, and the old segments (listed in ``compaction_leftovers``) are
removed by the compaction itself or, if it was killed, by the next writer. The ANN index, whose
ids changed, is built again afterwards; until then searches scan exactly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np

from indexer.archive import ann_build, checksums
from indexer.archive.catalog import CATALOG_FILE, Catalog
from indexer.archive.checksums import Chunk
from indexer.archive.durable import fsync_dir
from indexer.archive.segments import SEGMENTS_DIR, Segment
from indexer.archive.sql import quote_identifier
from indexer.archive.vector_store import VectorStore
from indexer.errors import ArchiveError

COMPACTED_SUFFIX = ".compact"
COPY_BLOCK_ROWS = 1 << 18
"""Live rows read and appended at a time (256 MiB at 512 dimensions)."""

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Reclaimable:
    """What a compaction would free."""

    dead_windows: int
    vector_bytes: int
    """The dead windows' rows in the segment files."""
    catalog_bytes: int
    """Blocks of the catalog file DuckDB holds free (it never gives them back itself)."""

    @property
    def total_bytes(self) -> int:
        return self.vector_bytes + self.catalog_bytes


@dataclass(frozen=True)
class CompactionReport:
    before: Reclaimable
    windows: int
    bytes_before: int
    bytes_after: int
    seconds: float


def reclaimable(catalog: Catalog, store: VectorStore) -> Reclaimable:
    dead = len(store.dead)
    row = catalog.one("SELECT free_blocks, block_size FROM pragma_database_size() WHERE database_name = current_database()")
    free = int(row[0]) * int(row[1]) if row is not None else 0
    return Reclaimable(dead, dead * store.dim * 2, free)


def compact(storage, progress: Progress | None = None) -> CompactionReport:
    """Compact the archive of ``storage`` (an ``ArchiveStorage`` whose writer lock is held)."""
    progress = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    directory = Path(storage.directory)
    catalog: Catalog = storage.catalog
    finish_leftovers(directory, catalog)
    for leftover in (CATALOG_FILE + COMPACTED_SUFFIX, CATALOG_FILE + COMPACTED_SUFFIX + ".wal"):
        (directory / leftover).unlink(missing_ok=True)  # a compaction killed before its commit
    store = storage.store
    before = reclaimable(catalog, store)
    bytes_before = _disk_bytes(directory)
    live = store.ids()
    if not before.total_bytes:
        return CompactionReport(before, len(live), bytes_before, bytes_before, time.perf_counter() - started)
    renumbered = before.dead_windows > 0  # else the vector files are as small as they get: only the catalog is copied
    first = catalog.next_window_id()
    generation = catalog.generation() + 1  # the new catalog's
    segments, chunks = _append_live(storage, store, first, len(live), progress) if renumbered else ([], [])
    plan = Renumbering(live, first, chunks, _remap_run_files(catalog, live, first), [s.path.name for s in store.segments]) \
        if renumbered else None
    target = directory / (CATALOG_FILE + COMPACTED_SUFFIX)
    progress("writing the compacted catalog", 0, 1)
    _write_catalog(catalog, target, plan)
    os.replace(target, directory / CATALOG_FILE)  # the commit, while this process still holds the old file: no
    fsync_dir(directory)                          # reader can have opened it and then meet its segments gone
    catalog.close()  # nothing was written to the old file since its checkpoint: closing it writes nothing
    storage.refresh()
    if catalog.generation() != generation:  # DuckDB handed back the old file: another connection of this process holds it
        raise ArchiveError("The archive was compacted, but this process still reads the old catalog through another open "
                           "connection; close it (and the app) and run `soundtrace compact` again to finish tidying.")
    if renumbered:
        storage.segment_files.mark_committed(segments)
        finish_leftovers(directory, catalog)
        catalog.run_files.remove(catalog.run_files.orphans({f.name for f in catalog.run_file_records()}))
        storage.maintain_ann()
        ann = storage.store.ann
        ann_build.tidy(directory, keep=ann.record.file if ann is not None else None)  # an archive now too small for one
    progress("writing the compacted catalog", 1, 1)
    return CompactionReport(before, len(live), bytes_before, _disk_bytes(directory), time.perf_counter() - started)


@dataclass(frozen=True)
class Renumbering:
    """Live windows moving to new ids: ``live`` (rising) becomes ``first + rank``, with the rows'
    new chunks, each audit run's rewritten files, and the segment files left behind."""

    live: np.ndarray
    first: int
    chunks: list[Chunk]
    run_files: dict[int, list]
    old_segments: list[str]


def finish_leftovers(directory: Path, catalog: Catalog) -> None:
    """Remove the segment files a committed compaction left (it was killed before it could)."""
    names = [name for (name,) in catalog.con.execute("SELECT name FROM compaction_leftovers").fetchall()]
    if not names:
        return
    folder = Path(directory) / SEGMENTS_DIR
    for name in names:
        (folder / name).unlink(missing_ok=True)
    fsync_dir(folder)
    with catalog.transaction():
        catalog.con.execute("DELETE FROM compaction_leftovers")


def _append_live(storage, store: VectorStore, first: int, count: int, progress: Progress) -> tuple[list[Segment], list[Chunk]]:
    """Every live row appended again from id ``first`` on, in id order, durably (not yet committed)."""
    files = storage.segment_files
    segments: dict[int, Segment] = {}
    chunks: dict[int, Chunk] = {}
    last: list[Segment] = []
    last_chunk: Chunk | None = None
    at = first
    pending, pending_rows = [], 0

    def flush() -> None:
        nonlocal at, last, last_chunk, pending, pending_rows
        if not pending:
            return
        rows = np.concatenate(pending) if len(pending) > 1 else pending[0]
        written = files.append(at, rows, last, last_chunk)
        for segment in written.segments:
            segments[segment.first_id] = segment
        for chunk in written.chunks:  # an append continues the last chunk: the later record wins
            chunks[chunk.first_id] = chunk
        last, last_chunk = [written.segments[-1]], written.chunks[-1]
        at += len(rows)
        pending, pending_rows = [], 0
        progress("copying the live vectors", at - first, count)

    for ids, rows in store.blocks(COPY_BLOCK_ROWS):
        if not len(rows):  # a block whose every window was deleted
            continue
        pending.append(np.asarray(rows))
        pending_rows += len(rows)
        if pending_rows >= COPY_BLOCK_ROWS:
            flush()
    flush()
    if at - first != count:
        raise ArchiveError("The live vectors changed while they were being compacted; run `soundtrace compact` again.")
    return [segments[k] for k in sorted(segments)], [chunks[k] for k in sorted(chunks)]


def _remap_run_files(catalog: Catalog, live: np.ndarray, first: int) -> dict[int, list]:
    """Each audit run's files written again with its best windows' new ids (old ids of windows no
    longer live stay as they were: nothing reads them but the run's own history)."""
    out = {}
    for (run_id,) in catalog.con.execute("SELECT DISTINCT run_id FROM audit_run_files ORDER BY 1").fetchall():
        out[run_id] = catalog.run_files.rewrite_ids(run_id, catalog.run_file_records([run_id]), "best_window_id", live, first)
    return out


def _write_catalog(catalog: Catalog, target: Path, plan: Renumbering | None) -> None:
    """The new catalog file: every table created as the old one's and filled with its rows (window
    ids following ``plan`` when windows are renumbered); then made durable."""
    import pyarrow as pa  # the write path only

    con = catalog.con
    con.execute("CHECKPOINT")
    old = catalog.one("SELECT current_database()")[0]
    if plan is not None:
        con.register("_remap", pa.table({"old": pa.array(plan.live, pa.int64()),
                                         "new": pa.array(plan.first + np.arange(len(plan.live), dtype=np.int64))}))
    con.execute("ATTACH ? AS compacted", [str(target)])
    try:
        con.execute(f"COPY FROM DATABASE {quote_identifier(old)} TO compacted (SCHEMA)")  # tables, keys, views: no rows
        con.execute("USE compacted")
        tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [old]).fetchall()]
        con.execute("BEGIN")
        for table in tables:
            _fill(con, old, table, plan is not None)
        if plan is not None:
            checksums.record(con, plan.chunks)
            con.execute("UPDATE state SET value = ? WHERE key = 'next_window_id'", [plan.first + len(plan.live)])
            for run_id, files in plan.run_files.items():
                con.executemany("INSERT INTO audit_run_files VALUES (?, ?, ?, ?, ?)",
                                [[run_id, part, f.name, f.size, f.crc32] for part, f in enumerate(files)])
            con.executemany("INSERT INTO compaction_leftovers VALUES (?)", [[name] for name in plan.old_segments])
        con.execute("UPDATE state SET value = value + 1 WHERE key = 'generation'")
        con.execute("COMMIT")
        con.execute("CHECKPOINT compacted")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # no transaction was open
        raise
    finally:
        con.execute(f"USE {quote_identifier(old)}")
        con.execute("DETACH compacted")
        if plan is not None:
            con.unregister("_remap")
    with open(target, "rb") as fh:
        os.fsync(fh.fileno())


RENUMBERED = ("dead_windows", "vector_chunks", "ann_index", "audit_run_files")
"""Tables remade when windows are renumbered: no dead windows, the new rows' chunks, an ANN built
again, the rewritten run files."""


def _fill(con, old: str, table: str, renumbered: bool) -> None:
    """One table's rows into the new catalog (the current database), window ids followed."""
    source = f"{quote_identifier(old)}.main.{quote_identifier(table)}"
    if table == "compaction_leftovers" or (renumbered and table in RENUMBERED):
        return
    if renumbered and table == "windows":
        con.execute(f"INSERT INTO windows SELECT w.* REPLACE (r.new AS id) FROM {source} w JOIN _remap r ON r.old = w.id ORDER BY r.new")
    elif renumbered and table == "label_marks":
        con.execute(f"INSERT INTO label_marks SELECT m.* REPLACE (coalesce(r.new, m.marked_window_id) AS marked_window_id)"
                    f" FROM {source} m LEFT JOIN _remap r ON r.old = m.marked_window_id")
    else:
        con.execute(f"INSERT INTO {quote_identifier(table)} SELECT * FROM {source}")


def _disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
