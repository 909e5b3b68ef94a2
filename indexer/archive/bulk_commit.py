"""Writing files to the catalog a round at a time, in a handful of statements whatever their number.

Indexing commits finished files in its plan's order, in rounds (``indexing.commits``); an import
adds many recordings at once (``ArchiveStorage.add_recordings``). Both come here: all of a round's
vectors are appended to the segment files in one durable write, then one catalog transaction
records the round with Arrow tables (recordings, windows, touched stats), bulk deletes for the
paths it replaces, the id counter and checksums that vouch for the vectors, and one generation
bump. A dozen statements per file cost ≈ 20 ms a file; a round costs about that in all.

A round ends as the same files written one at a time in the same order would: a new recording
gets max(id) + 1 in turn, a path already in the catalog keeps its id while its old windows die,
window ids follow the files' order. A file that depends on one written before it in the same
round (a reuse of a recording the round replaces, the same path twice) starts a new round, so no
round ever has to read its own writes. A kill anywhere leaves none of the round: its vector rows
are past the counter until the transaction commits, and the next writer cuts them off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from indexer.archive import checksums
from indexer.archive.checksums import Chunk
from indexer.archive.metadata import link_recordings, unlink_recordings
from indexer.archive.records import RecordingRow, WindowRows
from indexer.archive.sql import quote_identifier
from indexer.errors import ArchiveError

MAX_ROUND_FILES = 256
"""Files one round commits at most: a kill loses at most this many files' work."""
MAX_ROUND_BYTES = 200 * 1024 * 1024
"""float32 vector bytes one round holds at most (≈ 100,000 windows of 512 dimensions), so a long
backlog of finished files (staged shards read back) never sits in memory all at once."""

RECORDING_TYPES = {
    "path": pa.string(), "content_hash": pa.string(), "size_bytes": pa.int64(), "mtime": pa.float64(),
    "status": pa.string(), "duration_s": pa.float64(), "sample_rate": pa.int64(), "channels": pa.int64(),
    "format": pa.string(), "decoder": pa.string(), "error_kind": pa.string(), "error": pa.string(),
    "peak": pa.float64(), "rms_db": pa.float64(), "clipped_fraction": pa.float64(), "silent_fraction": pa.float64(),
    "is_silent": pa.bool_(), "is_clipped": pa.bool_(),
}  # fmt: skip
WINDOW_COLUMNS = ("channel", "start_s", "end_s", "rms_db", "peak", "clipped_fraction", "silent_fraction")
_WINDOW_SCHEMA = pa.schema([(c, pa.int16() if c == "channel" else pa.float64()) for c in WINDOW_COLUMNS])
_CLONED = [f for f in RecordingRow.__dataclass_fields__ if f not in ("path", "size_bytes", "mtime")]
WROTE_MEANWHILE = "Another process wrote this archive meanwhile; run again."


@dataclass(frozen=True)
class FileWrite:
    """One file's change to the catalog. Made by ``save`` (a recording, indexed with its windows
    and their vectors, or failed), ``reuse`` (a file with the bytes of an indexed recording: that
    row re-addressed, its windows and vectors copied) or ``touch`` (same bytes, a new stat)."""

    path: str
    size_bytes: int
    mtime: float
    row: RecordingRow | None = None
    windows: WindowRows | None = None
    copy_from: int | None = None
    touched: int | None = None

    @classmethod
    def save(cls, row: RecordingRow, windows: WindowRows | None = None) -> "FileWrite":
        return cls(row.path, row.size_bytes, row.mtime, row=row, windows=windows)

    @classmethod
    def reuse(cls, recording_id: int, path: str, size_bytes: int, mtime: float) -> "FileWrite":
        return cls(path, size_bytes, mtime, copy_from=int(recording_id))

    @classmethod
    def touch(cls, recording_id: int, path: str, size_bytes: int, mtime: float) -> "FileWrite":
        return cls(path, size_bytes, mtime, touched=int(recording_id))

    @property
    def vector_bytes(self) -> int:
        return int(self.windows.vectors.nbytes) if self.windows is not None and len(self.windows) else 0


@dataclass(frozen=True)
class Saved:
    """What a write left in the catalog: its recording's id and row (None for a touch)."""

    recording_id: int | None
    row: RecordingRow | None


@dataclass
class Round:
    """A round ready to commit: per write, the row to store and its windows' columns, and all the
    round's vectors in window-id order."""

    writes: Sequence[FileWrite]
    rows: list[RecordingRow | None]
    windows: list[pa.Table | None]
    vectors: np.ndarray | None


def rounds(writes: Sequence[FileWrite], existing: dict[str, int]) -> Iterator[list[FileWrite]]:
    """``writes`` cut where a write depends on one before it in the same round: a second write of
    one path, or a reuse of a recording the round replaces (``existing``: path -> id, the
    catalog's, for the paths written)."""
    part: list[FileWrite] = []
    paths: set[str] = set()
    replaced: set[int] = set()
    for write in writes:
        if part and (write.path in paths or write.copy_from in replaced):
            yield part
            part, paths, replaced = [], set(), set()
        part.append(write)
        paths.add(write.path)
        if write.touched is None and write.path in existing:
            replaced.add(existing[write.path])
    if part:
        yield part


def prepare(con, writes: Sequence[FileWrite], read_vectors: Callable[[np.ndarray], np.ndarray]) -> Round:
    """The rows and windows a round stores: reused recordings' rows and windows read from the
    catalog, and their vectors (``read_vectors``, float32) from the segment files, once for all."""
    sources = sorted({w.copy_from for w in writes if w.copy_from is not None})
    cloned: dict[int, tuple] = {}
    copied: dict[int, tuple[pa.Table, np.ndarray]] = {}
    if sources:
        found = con.execute(f"SELECT id, {', '.join(_CLONED)} FROM recordings WHERE list_contains(?, id)",
                            [sources]).fetchall()
        cloned = {int(r[0]): r[1:] for r in found}
        if len(cloned) != len(sources):
            raise ArchiveError(WROTE_MEANWHILE)
        table = con.sql(f"SELECT recording_id, id, {', '.join(WINDOW_COLUMNS)} FROM windows"
                        " WHERE list_contains(?, recording_id) ORDER BY recording_id, id", params=[sources]).to_arrow_table()
        owners = table["recording_id"].to_numpy()
        vectors = read_vectors(table["id"].to_numpy()) if len(owners) else np.empty((0, 0), np.float32)
        columns = table.select(list(WINDOW_COLUMNS)).cast(_WINDOW_SCHEMA)
        for source in sources:
            lo, hi = np.searchsorted(owners, source, "left"), np.searchsorted(owners, source, "right")
            copied[source] = (columns.slice(lo, hi - lo), vectors[lo:hi])
    rows: list[RecordingRow | None] = []
    windows: list[pa.Table | None] = []
    vectors: list[np.ndarray] = []
    for w in writes:
        if w.touched is not None:
            rows.append(None)
            windows.append(None)
        elif w.copy_from is not None:
            rows.append(RecordingRow(path=w.path, size_bytes=w.size_bytes, mtime=w.mtime,
                                     **dict(zip(_CLONED, cloned[w.copy_from]))))
            table, copies = copied[w.copy_from]
            windows.append(table)
            vectors.append(copies)
        else:
            rows.append(w.row)
            if w.windows is not None and len(w.windows):
                windows.append(_window_table(w.windows))
                vectors.append(np.asarray(w.windows.vectors))
            else:
                windows.append(None)
    vectors = [v for v in vectors if len(v)]
    return Round(writes, rows, windows, np.concatenate(vectors) if vectors else None)


def commit(catalog, part: Round, first_id: int, chunks: Sequence[Chunk], new_only: bool = False) -> list[Saved]:
    """The round's one transaction; its vectors are in the segment files from ``first_id`` on (so
    the counter must still be there: another writer meanwhile is refused, never folded in).
    ``new_only``: refuse paths already in the catalog (an import adds, never replaces)."""
    con = catalog.con
    with catalog.transaction():
        counter, next_id, metadata = catalog.one(
            "SELECT (SELECT value FROM state WHERE key = 'next_window_id'), (SELECT coalesce(max(id), 0) + 1 FROM"
            " recordings), EXISTS (SELECT 1 FROM metadata)")
        if counter != first_id:
            raise ArchiveError(WROTE_MEANWHILE)
        saved = [i for i, row in enumerate(part.rows) if row is not None]
        paths = [part.rows[i].path for i in saved]
        existing = dict(con.execute("SELECT path, id FROM recordings WHERE list_contains(?, path)", [paths]).fetchall()) \
            if paths else {}
        if new_only and (existing or len(set(paths)) != len(paths)):
            raise ArchiveError("Some of these recordings are in the archive already; index them instead.")
        if len(set(paths)) != len(paths):
            raise ArchiveError("A round of writes names one path twice; write them in separate rounds.")
        ids: list[int | None] = [None] * len(part.rows)
        for i, path in zip(saved, paths):
            if path in existing:
                ids[i] = int(existing[path])
            else:
                ids[i], next_id = int(next_id), int(next_id) + 1
        replaced = [int(existing[p]) for p in paths if p in existing]
        if replaced:
            con.execute("INSERT INTO dead_windows SELECT id FROM windows WHERE list_contains(?, recording_id)"
                        " ON CONFLICT DO NOTHING", [replaced])
            con.execute("DELETE FROM windows WHERE list_contains(?, recording_id)", [replaced])
            con.execute("DELETE FROM recordings WHERE list_contains(?, id)", [replaced])
        end = first_id
        if saved:
            _insert(con, "recordings", _recording_table([ids[i] for i in saved], [part.rows[i] for i in saved]),
                    extra=("indexed_at", "now()"))
            with_windows = [i for i in saved if part.windows[i] is not None and len(part.windows[i])]
            if with_windows:
                columns = pa.concat_tables([part.windows[i] for i in with_windows]).combine_chunks()  # one scan, not one a file
                counts = np.array([len(part.windows[i]) for i in with_windows], np.int64)
                end = first_id + len(columns)
                columns = columns.add_column(0, "recording_id", pa.array(np.repeat([ids[i] for i in with_windows], counts)))
                _insert(con, "windows", columns.add_column(0, "id", pa.array(np.arange(first_id, end, dtype=np.int64))))
        touched = [w for w in part.writes if w.touched is not None]
        if touched:
            _touch(con, touched)
        if saved:
            con.execute("UPDATE state SET value = ? WHERE key = 'next_window_id'", [end])
            checksums.record(con, list(chunks))
            if metadata:  # each recording written gets its metadata row resolved
                link_recordings(con, [ids[i] for i in saved])
            elif replaced:  # no metadata: only links a replaced recording had before are let go
                unlink_recordings(con, replaced)
            catalog.bump_generation()
    return [Saved(i, row) for i, row in zip(ids, part.rows)]


def _window_table(w: WindowRows) -> pa.Table:
    return pa.table({c: pa.array(np.asarray(getattr(w, c), _WINDOW_SCHEMA.field(c).type.to_pandas_dtype()))
                     for c in WINDOW_COLUMNS}, schema=_WINDOW_SCHEMA)


def _recording_table(ids: list[int], rows: list[RecordingRow]) -> pa.Table:
    columns = {"id": pa.array(ids, pa.int64()), "file_name": pa.array([Path(r.path).name for r in rows], pa.string())}
    for name, kind in RECORDING_TYPES.items():
        columns[name] = pa.array([getattr(r, name) for r in rows], kind)
    return pa.table(columns)


def _insert(con, table: str, rows: pa.Table, extra: tuple[str, str] | None = None) -> None:
    """``rows`` (Arrow, columns named as the table's) into ``table``, plus one computed column."""
    names = ", ".join(quote_identifier(c) for c in rows.column_names)  # our own column names, quoted the one way
    more = f", {extra[0]}" if extra else ""
    value = f", {extra[1]}" if extra else ""
    _bulk_rows = rows  # noqa: F841 — read by DuckDB's scan of this frame's Arrow tables (a registered view
    # costs ≈ 1 ms more a statement)
    con.execute(f"INSERT INTO {table} ({names}{more}) SELECT {names}{value} FROM _bulk_rows")


def _touch(con, touched: Sequence[FileWrite]) -> None:
    """Files whose bytes are unchanged but whose stat moved: the new stat only."""
    table = pa.table({
        "id": pa.array([w.touched for w in touched], pa.int64()),
        "size_bytes": pa.array([w.size_bytes for w in touched], pa.int64()),
        "mtime": pa.array([w.mtime for w in touched], pa.float64()),
    })
    _touched = table  # noqa: F841 — read by DuckDB's scan of this frame's Arrow tables
    con.execute("UPDATE recordings SET size_bytes = t.size_bytes, mtime = t.mtime FROM _touched t WHERE recordings.id = t.id")
