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

from indexer.archive import checksums, schema
from indexer.archive.ann import AnnEntry
from indexer.archive.checksums import Chunk
from indexer.archive.connection import LOCK_WAIT_S, connect
from indexer.archive.metadata import (
    INTERNAL_COLUMNS,
    RECORDING_VIEW,
    import_csv,
    refresh_view,
    unlink_recordings,
)
from indexer.archive.records import KnownFile
from indexer.archive.run_files import RunFile, RunFiles
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
        import pyarrow as pa  # here: a search never needs it (its import is 85 ms)

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

    # --- metadata ------------------------------------------------------------------------------

    # --- audit runs' result files ---------------------------------------------------------------

    @property
    def run_files(self) -> RunFiles:
        if self.path is None:
            raise ArchiveError("An in-memory catalog keeps no audit runs; open an archive folder.")
        return RunFiles(self.path.parent)

    def name_run_files(self, run_id: int, files: Sequence[RunFile]) -> list[str]:
        """Make ``files`` the run's rows (in the caller's transaction); returns the names they replace."""
        old = [row[0] for row in self.con.execute("SELECT name FROM audit_run_files WHERE run_id = ?", [run_id]).fetchall()]
        self.con.execute("DELETE FROM audit_run_files WHERE run_id = ?", [run_id])
        self.con.executemany("INSERT INTO audit_run_files VALUES (?, ?, ?, ?, ?)",
                             [[run_id, part, f.name, f.size, f.crc32] for part, f in enumerate(files)])
        return old

    def run_file_records(self, run_ids: Sequence[int] | None = None) -> list[RunFile]:
        """The files holding the rows of ``run_ids`` (None: of every run), in run and part order."""
        rows = self.con.execute(
            "SELECT name, size, crc32 FROM audit_run_files WHERE ? IS NULL OR list_contains(?, run_id) ORDER BY run_id, part",
            [None if run_ids is None else True, [int(r) for r in run_ids or []]],
        ).fetchall()
        return [RunFile(*row) for row in rows]

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
