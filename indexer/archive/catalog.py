"""The DuckDB catalog: recordings, windows, metadata, and schema migrations.

The catalog is the archive's source of truth for what exists; the vectors themselves are rows of
the segment files (``segments``), whose window ids the catalog hands out (``next_window_id``)
in the same transaction as the windows they belong to. An id below the counter has its vector on
disk; a window deleted or replaced becomes a ``dead_windows`` row in that transaction too.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from indexer.archive import checksums, schema
from indexer.archive.ann import AnnEntry
from indexer.archive.checksums import Chunk
from indexer.archive.connection import LOCK_WAIT_S, connect
from indexer.archive.metadata import (
    INTERNAL_COLUMNS,
    RECORDING_VIEW,
    import_csv,
    link_recordings,
    refresh_view,
    unlink_recordings,
)
from indexer.archive.records import KnownFile, RecordingRow, WindowRows
from indexer.archive.sql import quote_identifier
from indexer.errors import ArchiveError, ArchiveWriteError

CATALOG_FILE = "catalog.duckdb"
_MEMORY = re.compile(r"^\d+(\.\d+)?[KMGT]i?B$")


class Catalog:
    """The DuckDB catalog; every mutating method is one transaction.

    DuckDB lets one process write a file, and nobody read it meanwhile. So that searches and the
    app keep answering while ``index`` runs, long-lived users call ``yield_lock`` between units
    of work: the connection closes and reopens on next use, waiting (up to ``LOCK_WAIT_S``)
    while another process holds the file.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path | None, read_only: bool = False):
        self._con: duckdb.DuckDBPyConnection | None = con
        self.path = path
        self.read_only = read_only

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path | None, read_only: bool = False, wait_s: float = LOCK_WAIT_S,
             migrate: bool = True) -> "Catalog":
        """Open (and unless told otherwise, migrate) the catalog in ``directory``; ``None`` gives an
        in-memory catalog."""
        path = None if directory is None else Path(directory) / CATALOG_FILE
        catalog = cls(connect(path, read_only, wait_s), path, read_only)
        if migrate and not read_only:
            try:
                catalog.migrate()
            except BaseException:
                catalog.close()
                raise
        return catalog

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = connect(self.path, self.read_only, LOCK_WAIT_S)
        return self._con

    def yield_lock(self) -> None:
        """Let other processes in until this catalog is used again (a no-op in memory)."""
        if self._con is not None and self.path is not None:
            self._con.close()
            self._con = None

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; a catalog that cannot be written (a full disk, an immutable file) is
        ``ArchiveWriteError`` with everything rolled back."""
        self.con.execute("BEGIN")
        try:
            yield
        except (duckdb.IOException, duckdb.TransactionException, duckdb.PermissionException) as exc:
            self._roll_back()
            raise self._unwritable(exc) from None
        except BaseException:
            self._roll_back()
            raise
        try:
            self.con.execute("COMMIT")
        except duckdb.Error as exc:
            self._roll_back()
            raise self._unwritable(exc) from None

    def _roll_back(self) -> None:
        try:
            self.con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # a failed COMMIT rolled back already

    def _unwritable(self, exc: Exception) -> ArchiveWriteError:
        return ArchiveWriteError(
            f"Cannot write the catalog {self.path} ({str(exc).splitlines()[0][:160]}); nothing was changed — free space "
            "or fix the permissions and run again."
        )

    @contextmanager
    def memory_limit(self, limit: str) -> Iterator[None]:
        """Run a block under a DuckDB memory limit (one of our own settings, never user text)."""
        if not _MEMORY.match(limit):
            raise ValueError(f"not a DuckDB memory size: {limit!r}")
        con = self.con
        con.execute(f"SET memory_limit = '{limit}'")
        try:
            yield
        finally:
            con.execute("RESET memory_limit")  # soundtrace sets no other limit: back to DuckDB's default

    def one(self, sql: str, params: list | None = None) -> tuple | None:
        """The first row, reading the result to its end (DuckDB 2 refuses new work on a half-read result)."""
        rows = self.con.execute(sql, params).fetchall()
        return rows[0] if rows else None

    def schema_version(self) -> int:
        if not self.has_table("schema_migrations"):
            return 0
        return int(self.one("SELECT coalesce(max(version), 0) FROM schema_migrations")[0])

    def has_table(self, name: str) -> bool:
        return bool(self.one("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name])[0])

    def migrate(self) -> None:
        """Apply the numbered migrations not yet applied (``schema``)."""
        schema.migrate(self)

    def needs_migration(self) -> bool:
        return self.schema_version() < schema.latest_version()

    # --- generation ----------------------------------------------------------------------------

    def generation(self) -> int:
        """Bumped by every write; readers reopen the vector files when it moves."""
        return int(self.one("SELECT value FROM state WHERE key = 'generation'")[0])

    def all_window_ids(self) -> np.ndarray:
        return self.con.sql("SELECT id FROM windows ORDER BY id").fetchnumpy()["id"].astype(np.int64)

    def next_window_id(self) -> int:
        """Every id below this has its vector in the segment files."""
        return int(self.one("SELECT value FROM state WHERE key = 'next_window_id'")[0])

    def dead_window_ids(self) -> np.ndarray:
        return self.con.sql("SELECT id FROM dead_windows ORDER BY id").fetchnumpy()["id"].astype(np.int64)

    def vector_chunks(self, last_segment: bool = False) -> list[Chunk]:
        """The chunks the catalog vouches for, with CRCs, in id order (or the newest file's only)."""
        return checksums.load(self.con, last_segment)

    def ann_entry(self) -> AnnEntry | None:
        return AnnEntry.load(self.con)

    def set_ann_entry(self, entry: AnnEntry | None) -> None:
        """Swap the ANN index in force (None: no index), in one transaction."""
        with self.transaction():
            if entry is None:
                AnnEntry.clear(self.con)
            else:
                entry.save(self.con)
            self.bump_generation()

    def record_chunks(self, chunks: Sequence[Chunk]) -> None:
        """CRCs recomputed by ``check --repair`` over rows no live window uses any more."""
        with self.transaction():
            checksums.record(self.con, list(chunks))
            self.bump_generation()

    def mark_dead(self, window_ids: np.ndarray) -> None:
        if len(window_ids):
            self.con.register("_dead", pa.table({"id": pa.array(np.asarray(window_ids, np.int64))}))
            try:
                self.con.execute("INSERT INTO dead_windows SELECT id FROM _dead ON CONFLICT DO NOTHING")
            finally:
                self.con.unregister("_dead")

    def bump_generation(self) -> None:
        self.con.execute("UPDATE state SET value = value + 1 WHERE key = 'generation'")

    # --- reads ---------------------------------------------------------------------------------

    def known_files(self) -> dict[str, KnownFile]:
        rows = self.con.execute(
            "SELECT path, id, size_bytes, mtime, content_hash, status FROM recordings"
        ).fetchall()
        return {p: KnownFile(i, s, m, h, st) for p, i, s, m, h, st in rows}

    def indexed_hashes(self) -> dict[str, int]:
        """Content hash -> an indexed recording with those bytes (a copy or a move needs no model work)."""
        rows = self.con.execute(
            "SELECT content_hash, min(id) FROM recordings WHERE status = 'indexed' AND content_hash IS NOT NULL"
            " GROUP BY content_hash"
        ).fetchall()
        return {h: int(i) for h, i in rows}

    def clone_row(self, recording_id: int, path: str, size_bytes: int, mtime: float) -> RecordingRow:
        """The row of an indexed recording, re-addressed to another file with the same bytes."""
        fields = [f for f in RecordingRow.__dataclass_fields__ if f not in ("path", "size_bytes", "mtime")]
        values = self.one(
            f"SELECT {', '.join(fields)} FROM recordings WHERE id = ?", [recording_id]
        )
        return RecordingRow(path=path, size_bytes=size_bytes, mtime=mtime, **dict(zip(fields, values)))

    def window_count(self) -> int:
        return int(self.one("SELECT count(*) FROM windows")[0])

    def channel_mode_seen(self) -> str | None:
        """"split" when some window is of a channel past the first, "mix" when a recording with
        more than one channel has only first-channel windows, None when no file told them apart."""
        split, multichannel = self.one(
            "SELECT (SELECT coalesce(max(channel), 0) FROM windows) > 0,"
            " EXISTS (SELECT 1 FROM recordings WHERE status = 'indexed' AND channels > 1)"
        )
        return "split" if split else "mix" if multichannel else None

    def window_ids(self, recording_id: int) -> np.ndarray:
        rows = self.con.execute(
            "SELECT id FROM windows WHERE recording_id = ? ORDER BY id", [recording_id]
        ).fetchnumpy()
        return rows["id"].astype(np.int64)

    # --- writes --------------------------------------------------------------------------------

    def save_recording(
        self, row: RecordingRow, windows: WindowRows | None, first_id: int, copy_from: int | None = None,
        chunks: Sequence[Chunk] = (),
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """Insert or replace one recording and its windows atomically; the windows' vectors are
        already in the segment files from ``first_id`` on (so the counter must still be there).

        Returns (recording id, removed window ids, added window ids). ``copy_from`` gives the new
        windows another recording's rows (same content; its vectors were copied the same way).
        """
        with self.transaction():
            if self.next_window_id() != first_id:
                raise ArchiveError("Another process wrote this archive meanwhile; run again.")
            existing = self.one("SELECT id FROM recordings WHERE path = ?", [row.path])
            if existing is None:
                rec_id = int(self.one("SELECT coalesce(max(id), 0) + 1 FROM recordings")[0])
                removed = np.empty(0, dtype=np.int64)
            else:
                rec_id = int(existing[0])
                removed = self.window_ids(rec_id)
                self.mark_dead(removed)
                self.con.execute("DELETE FROM windows WHERE recording_id = ?", [rec_id])
                self.con.execute("DELETE FROM recordings WHERE id = ?", [rec_id])
            self._insert_recording(rec_id, row)
            first = first_id
            if copy_from is not None:
                self.con.execute(
                    "INSERT INTO windows SELECT row_number() OVER (ORDER BY id) + ? - 1, ?, channel, start_s, end_s,"
                    " rms_db, peak, clipped_fraction, silent_fraction FROM windows WHERE recording_id = ?",
                    [first, rec_id, copy_from],
                )
                count = int(self.one("SELECT count(*) FROM windows WHERE recording_id = ?", [rec_id])[0])
            elif windows is not None and len(windows):
                self._insert_windows(first, rec_id, windows)
                count = len(windows)
            else:
                count = 0
            self.con.execute("UPDATE state SET value = ? WHERE key = 'next_window_id'", [first + count])
            checksums.record(self.con, list(chunks))
            link_recordings(self.con, [rec_id])
            self.bump_generation()
        return rec_id, removed, np.arange(first, first + count, dtype=np.int64)

    def add_recordings(self, rows: Sequence[RecordingRow], windows: Sequence[WindowRows], first_id: int,
                       chunks: Sequence[Chunk] = ()) -> np.ndarray:
        """Insert many new recordings and their windows in one transaction (bulk imports: a few
        rows each would otherwise cost a transaction apiece); their vectors are in the segment
        files from ``first_id`` on. Returns the recordings' ids."""
        with self.transaction():
            if self.next_window_id() != first_id:
                raise ArchiveError("Another process wrote this archive meanwhile; run again.")
            paths = [row.path for row in rows]
            taken = self.one("SELECT count(*) FROM recordings WHERE list_contains(?, path)", [paths])[0]
            if taken or len(set(paths)) != len(paths):
                raise ArchiveError("Some of these recordings are in the archive already; index them instead.")
            start = int(self.one("SELECT coalesce(max(id), 0) + 1 FROM recordings")[0])
            ids = np.arange(start, start + len(rows), dtype=np.int64)
            columns = {f: [getattr(row, f) for row in rows] for f in RecordingRow.__dataclass_fields__}
            recordings = pa.table({"id": ids, "file_name": [Path(p).name for p in paths], **columns})
            counts = np.array([len(w) for w in windows], np.int64)
            cat = lambda name, kind: np.concatenate([np.asarray(getattr(w, name), kind) for w in windows]) if windows else np.empty(0, kind)  # noqa: E731
            total = int(counts.sum())
            table = pa.table({
                "id": np.arange(first_id, first_id + total, dtype=np.int64), "recording_id": np.repeat(ids, counts),
                "channel": cat("channel", np.int16), "start_s": cat("start_s", np.float64), "end_s": cat("end_s", np.float64),
                "rms_db": cat("rms_db", np.float64), "peak": cat("peak", np.float64),
                "clipped_fraction": cat("clipped_fraction", np.float64), "silent_fraction": cat("silent_fraction", np.float64),
            })  # fmt: skip
            names = ", ".join(quote_identifier(c) for c in recordings.column_names)  # RecordingRow's own fields
            self.con.register("_new_recordings", recordings)
            self.con.register("_new_windows", table)
            try:
                self.con.execute(f"INSERT INTO recordings ({names}, indexed_at) SELECT {names}, now() FROM _new_recordings")
                self.con.execute("INSERT INTO windows SELECT * FROM _new_windows")
            finally:
                self.con.unregister("_new_recordings")
                self.con.unregister("_new_windows")
            self.con.execute("UPDATE state SET value = ? WHERE key = 'next_window_id'", [first_id + total])
            checksums.record(self.con, list(chunks))
            link_recordings(self.con, ids.tolist())
            self.bump_generation()
        return ids

    def touch(self, recording_id: int, size_bytes: int, mtime: float) -> None:
        """A file whose bytes are unchanged but whose mtime moved: remember the new stat only."""
        self.con.execute(
            "UPDATE recordings SET size_bytes = ?, mtime = ? WHERE id = ?", [size_bytes, mtime, recording_id]
        )

    def delete_recordings(self, recording_ids: Iterable[int]) -> np.ndarray:
        ids = [int(i) for i in recording_ids]
        if not ids:
            return np.empty(0, dtype=np.int64)
        with self.transaction():
            removed = self.con.execute(
                "SELECT id FROM windows WHERE list_contains(?, recording_id) ORDER BY id", [ids]
            ).fetchnumpy()["id"].astype(np.int64)
            self.mark_dead(removed)
            self.con.execute("DELETE FROM windows WHERE list_contains(?, recording_id)", [ids])
            self.con.execute("DELETE FROM recordings WHERE list_contains(?, id)", [ids])
            unlink_recordings(self.con, ids)
            self.bump_generation()
        return removed

    def _insert_recording(self, rec_id: int, row: RecordingRow) -> None:
        self.con.execute(
            "INSERT INTO recordings (id, path, file_name, content_hash, size_bytes, mtime, duration_s, sample_rate,"
            " channels, format, decoder, status, error_kind, error, peak, rms_db, clipped_fraction, silent_fraction,"
            " is_silent, is_clipped, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " now())",
            [
                rec_id, row.path, Path(row.path).name, row.content_hash, row.size_bytes, row.mtime, row.duration_s,
                row.sample_rate, row.channels, row.format, row.decoder, row.status, row.error_kind, row.error,
                row.peak, row.rms_db, row.clipped_fraction, row.silent_fraction, row.is_silent, row.is_clipped,
            ],
        )

    def _insert_windows(self, first_id: int, rec_id: int, w: WindowRows) -> None:
        n = len(w)
        table = pa.table(
            {
                "id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
                "recording_id": pa.array(np.full(n, rec_id, dtype=np.int64)),
                "channel": pa.array(np.asarray(w.channel, dtype=np.int16)),
                "start_s": pa.array(np.asarray(w.start_s, dtype=np.float64)),
                "end_s": pa.array(np.asarray(w.end_s, dtype=np.float64)),
                "rms_db": pa.array(np.asarray(w.rms_db, dtype=np.float64)),
                "peak": pa.array(np.asarray(w.peak, dtype=np.float64)),
                "clipped_fraction": pa.array(np.asarray(w.clipped_fraction, dtype=np.float64)),
                "silent_fraction": pa.array(np.asarray(w.silent_fraction, dtype=np.float64)),
            }
        )
        self.con.register("_new_windows", table)
        try:
            self.con.execute("INSERT INTO windows SELECT * FROM _new_windows")
        finally:
            self.con.unregister("_new_windows")

    # --- metadata ------------------------------------------------------------------------------

    def import_metadata(self, csv_path: Path) -> int:
        """Merge a user CSV into ``metadata`` (see ``metadata.import_csv``); returns the rows read."""
        return import_csv(self, csv_path)

    def _refresh_view(self) -> None:
        refresh_view(self.con)

    def view_columns(self) -> dict[str, str]:
        """Column name -> DuckDB type of ``recordings_view``."""
        return {r[0]: r[1] for r in self.con.execute(f"DESCRIBE {RECORDING_VIEW}").fetchall()}

    def filter_columns(self) -> dict[str, str]:
        """The view's columns a person filters on (``--where``, dates, picks): all but bookkeeping."""
        return {name: kind for name, kind in self.view_columns().items() if name not in INTERNAL_COLUMNS}

    def metadata_columns(self) -> list[str]:
        return [r[0] for r in self.con.execute("DESCRIBE metadata").fetchall() if r[0] not in ("_path", "_name")]
