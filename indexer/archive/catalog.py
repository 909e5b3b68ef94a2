"""The DuckDB catalog: recordings, windows (with their vectors), metadata, and schema migrations.

The catalog is the archive's single source of truth. Vectors live in the ``windows`` table next
to the row that describes them, so every write of a recording is one transaction and the FAISS
index can always be rebuilt from here after a crash.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from indexer.archive.connection import LOCK_WAIT_S, connect
from indexer.archive.metadata import INTERNAL_COLUMNS, RECORDING_VIEW, import_csv, refresh_view
from indexer.archive.records import KnownFile, RecordingRow, WindowRows
from indexer.errors import ArchiveError

CATALOG_FILE = "catalog.duckdb"


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("indexer.archive") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), entry.read_text(encoding="utf-8")))
    return sorted(found)


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
    def open(cls, directory: Path | None, read_only: bool = False, wait_s: float = LOCK_WAIT_S) -> "Catalog":
        """Open (and migrate) the catalog in ``directory``; ``None`` gives an in-memory catalog."""
        path = None if directory is None else Path(directory) / CATALOG_FILE
        catalog = cls(connect(path, read_only, wait_s), path, read_only)
        if not read_only:
            catalog.migrate()
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
        self.con.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

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
        """Apply numbered migrations not yet applied, each in its own transaction."""
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)"
        )
        current = self.schema_version()
        for version, sql in _migrations():
            if version <= current:
                continue
            with self.transaction():
                self.con.execute(sql)
                self.con.execute("INSERT INTO schema_migrations VALUES (?, now())", [version])
                self._refresh_view()

    # --- generation ----------------------------------------------------------------------------

    def generation(self) -> int:
        """Bumped by every write; the FAISS file records which generation it reflects."""
        return int(self.one("SELECT value FROM state WHERE key = 'generation'")[0])

    def ids_unique_since(self) -> int:
        """The generation from which window ids are never reused (see migration 005)."""
        return int(self.one("SELECT value FROM state WHERE key = 'ids_unique_since'")[0])

    def all_window_ids(self) -> np.ndarray:
        return self.con.sql("SELECT id FROM windows").fetchnumpy()["id"].astype(np.int64)

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

    def window_ids(self, recording_id: int) -> np.ndarray:
        rows = self.con.execute(
            "SELECT id FROM windows WHERE recording_id = ? ORDER BY id", [recording_id]
        ).fetchnumpy()
        return rows["id"].astype(np.int64)

    def iter_vectors(self, dim: int, after_id: int = 0, chunk: int = 65_536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of the windows with ids above ``after_id``, in storage order (which is id
        order: ids only grow), streamed from one scan, for building the vector index. The catalog
        cannot be used until the iteration ends."""
        for batch in self.con.sql(f"SELECT id, embedding FROM windows WHERE id > {int(after_id)}").to_arrow_reader(chunk):
            ids = batch.column(0).to_numpy().astype(np.int64)
            flat = batch.column(1).flatten().to_numpy()
            if len(flat) != len(ids) * dim:
                raise ArchiveError(f"The catalog holds vectors that are not {dim}-dimensional; it was not written by this archive's model.")
            yield ids, np.ascontiguousarray(flat.reshape(-1, dim), dtype=np.float32)

    def vectors_for(self, window_ids: Sequence[int], dim: int) -> np.ndarray:
        """The vectors of ``window_ids``, in that order (a join returns rows in no promised order)."""
        wanted = np.asarray(window_ids, dtype=np.int64)
        self.con.register("_wanted", pa.table({"id": pa.array(wanted), "position": pa.array(np.arange(len(wanted)))}))
        try:
            table = self.con.sql(
                f"SELECT w.embedding::FLOAT[{int(dim)}] AS e FROM _wanted JOIN windows w USING (id) ORDER BY position"
            ).to_arrow_table()
        finally:
            self.con.unregister("_wanted")
        if table.num_rows != len(wanted):
            raise ArchiveError("Some requested windows are not in the catalog.")
        return table.column("e").combine_chunks().flatten().to_numpy().reshape(-1, dim).astype(np.float32)

    # --- writes --------------------------------------------------------------------------------

    def save_recording(
        self, row: RecordingRow, windows: WindowRows | None, copy_from: int | None = None
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """Insert or replace one recording and its windows atomically.

        Returns (recording id, removed window ids, added window ids) so the caller can mirror the
        change in the vector index. ``copy_from`` reuses another recording's windows (same content).
        """
        with self.transaction():
            existing = self.one("SELECT id FROM recordings WHERE path = ?", [row.path])
            if existing is None:
                rec_id = int(self.one("SELECT coalesce(max(id), 0) + 1 FROM recordings")[0])
                removed = np.empty(0, dtype=np.int64)
            else:
                rec_id = int(existing[0])
                removed = self.window_ids(rec_id)
                self.con.execute("DELETE FROM windows WHERE recording_id = ?", [rec_id])
                self.con.execute("DELETE FROM recordings WHERE id = ?", [rec_id])
            self._insert_recording(rec_id, row)
            first = int(self.one("SELECT value FROM state WHERE key = 'next_window_id'")[0])
            if copy_from is not None:
                self.con.execute(
                    "INSERT INTO windows SELECT row_number() OVER (ORDER BY id) + ? - 1, ?, channel, start_s, end_s,"
                    " rms_db, peak, clipped_fraction, silent_fraction, embedding FROM windows WHERE recording_id = ?",
                    [first, rec_id, copy_from],
                )
                count = int(self.one("SELECT count(*) FROM windows WHERE recording_id = ?", [rec_id])[0])
            elif windows is not None and len(windows):
                self._insert_windows(first, rec_id, windows)
                count = len(windows)
            else:
                count = 0
            self.con.execute("UPDATE state SET value = ? WHERE key = 'next_window_id'", [first + count])
            self.bump_generation()
        return rec_id, removed, np.arange(first, first + count, dtype=np.int64)

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
            self.con.execute("DELETE FROM windows WHERE list_contains(?, recording_id)", [ids])
            self.con.execute("DELETE FROM recordings WHERE list_contains(?, id)", [ids])
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
        n, dim = w.vectors.shape
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
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ascontiguousarray(w.vectors, dtype=np.float32).ravel()), dim
                ),
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
