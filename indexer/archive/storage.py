"""An archive directory on disk: the catalog, the vector index and the manifest, kept consistent.

This layer knows no model: a new archive is told the identity of the model that will fill it
(``NewArchive``), and vectors arrive already computed. ``indexer.session`` adds the model.

Every change goes to the catalog first (one transaction per recording), then to the in-memory
vector index; ``flush`` writes the index atomically and records in the manifest which catalog
generation it reflects. The index file is never trusted: on open its window ids are compared
with the catalog's and whatever differs (a crash between the two writes, a run still going) is
brought up to date from the catalog's vectors, so a killed run loses nothing. One process
writes at a time (``locks.WriterLock``): a second ``index`` is refused with one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from indexer.archive.catalog import CATALOG_FILE, Catalog
from indexer.archive.locks import WriterLock
from indexer.archive.manifest import MANIFEST_FILE, Manifest
from indexer.archive.records import RecordingRow, WindowRows
from indexer.archive.vector_store import INDEX_FILE, StoreConfig, VectorStore
from indexer.config import WindowConfig
from indexer.embedding import ModelIdentity
from indexer.errors import ArchiveError, ArchiveNotFoundError


@dataclass(frozen=True)
class NewArchive:
    """What a new archive records about the model that will fill it."""

    identity: ModelIdentity
    logit_scale: float | None
    windows: WindowConfig = WindowConfig()


@dataclass(frozen=True)
class FailedFile:
    path: str
    error_kind: str
    error: str

    @property
    def reason(self) -> str:
        """The error without the file's own path in front, for a table that shows the file beside it."""
        return self.error.removeprefix(f"{self.path}: ")


@dataclass(frozen=True)
class ArchiveInfo:
    directory: Path
    recordings: int
    failed: int
    hours: float
    windows: int
    vectors: int
    model_id: str
    revision: str
    dim: int
    window_s: float
    hop_s: float
    index_factory: str
    disk_bytes: int
    metadata_columns: list[str]
    last_indexed_at: datetime | None
    failures: list[FailedFile]


class ArchiveStorage:
    """The archive's files: every vector the index holds is a window row of the catalog, and back."""

    def __init__(self, directory: Path, catalog: Catalog, manifest: Manifest, read_only: bool, store_config: StoreConfig):
        self.directory = directory
        self.catalog = catalog
        self.manifest = manifest
        self.store = VectorStore.empty(manifest.dim, store_config)
        self.read_only = read_only
        self._writer = WriterLock(directory)
        self._store_generation = -1
        """The catalog generation the in-memory vector index reflects."""
        self._file_stale = False
        """The in-memory index holds other windows than the index file."""
        self._manifest_stale = False
        """The manifest names another generation than ``_store_generation``."""

    # --- opening -------------------------------------------------------------------------------

    @staticmethod
    def exists(directory: str | Path) -> bool:
        directory = Path(directory).expanduser().resolve()
        return (directory / CATALOG_FILE).exists() and (directory / MANIFEST_FILE).exists()

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        new: NewArchive | None = None,
        identity: ModelIdentity | None = None,
        windows: WindowConfig | None = None,
        store_config: StoreConfig = StoreConfig(),
        read_only: bool = False,
        **extra: Any,
    ):
        """Open an archive, or with ``new`` make it if missing; ``identity`` and ``windows`` are
        checked against what it holds. ``extra`` goes to the constructor of a subclass."""
        directory = Path(directory).expanduser().resolve()
        if cls.exists(directory):
            manifest = Manifest.load(directory)
            catalog = Catalog.open(directory, read_only=read_only)
        elif new is not None:
            catalog, manifest = _create(directory, new, store_config)
        else:
            raise ArchiveNotFoundError(
                f"No soundtrace archive at {directory}; run `soundtrace index FOLDER --archive {directory}` first."
            )
        try:
            if identity is not None:
                manifest.check_model(identity)
            if windows is not None:
                manifest.check_windows(windows)
            store_config = StoreConfig(factory=manifest.index_factory, gpu=store_config.gpu)
            archive = cls(directory, catalog, manifest, read_only, store_config, **extra)
            archive._load_store(store_config)
        except Exception:
            catalog.close()
            raise
        return archive

    def _load_store(self, config: StoreConfig) -> None:
        """The FAISS file, made to agree with the catalog; rebuilt from the catalog when it is
        missing, unreadable, of another dimension or older than unique window ids."""
        path = self.directory / INDEX_FILE
        store = None
        if path.exists() and self.manifest.index_generation >= self.catalog.ids_unique_since():
            try:
                store = VectorStore.load(path, config)
            except Exception:  # noqa: BLE001 - truncated or foreign: the catalog has every vector
                store = None
        if store is None or store.dim != self.manifest.dim:
            self.rebuild_index(config)
        else:
            self._sync(store, self.manifest.index_generation)

    def _sync(self, store: VectorStore, reflects: int) -> None:
        """Make ``store`` hold exactly the catalog's windows: drop the ids the catalog no longer has,
        add the ones it lacks. Ids are never reused, so an id both hold is the same vector, and
        windows written later have higher ids (read in one scan; any other missing id by id)."""
        generation = self.catalog.generation()
        held, current = store.ids(), self.catalog.all_window_ids()
        gone = np.setdiff1d(held, current)
        missing = np.setdiff1d(current, held)
        store.remove(gone)
        newest = int(held.max(initial=0))
        stray = missing[missing <= newest]
        if len(stray):
            store.add(stray, self.catalog.vectors_for(stray, self.manifest.dim))
        if len(missing) > len(stray):
            for ids, vectors in self.catalog.iter_vectors(self.manifest.dim, after_id=newest):
                store.add(ids, vectors)
        if len(store) != len(current):  # an id held twice: nothing to repair from, start over
            self.rebuild_index(store.config)
            return
        self.store, self._store_generation = store, generation
        self._file_stale |= bool(len(gone) or len(missing))
        self._manifest_stale |= self._file_stale or reflects != generation
        self.flush()

    def refresh(self) -> None:
        """Bring the in-memory index up to date with what other processes committed since it loaded."""
        if self.catalog.generation() != self._store_generation:
            self._sync(self.store, self._store_generation)

    def rebuild_index(self, config: StoreConfig | None = None) -> None:
        """Recreate the vector index from the catalog's vectors (the source of truth)."""
        generation = self.catalog.generation()
        store = VectorStore.empty(self.manifest.dim, config or self.store.config)
        for ids, vectors in self.catalog.iter_vectors(self.manifest.dim):
            store.add(ids, vectors)
        self.store, self._store_generation = store, generation
        self._file_stale = self._manifest_stale = True
        self.flush()

    @property
    def generation(self) -> int:
        """The catalog generation this archive's vector index reflects (a cache key for readers)."""
        return self._store_generation

    def close(self) -> None:
        try:
            self.flush()
        finally:
            try:
                self.catalog.close()
            finally:
                self._writer.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def check_no_writer(cls, directory: str | Path) -> None:
        """ArchiveBusyError now, before a model is loaded, when another process writes ``directory``."""
        directory = Path(directory).expanduser().resolve()
        if directory.is_dir():
            with WriterLock(directory):
                pass

    # --- writes (used by the pipeline) -----------------------------------------------------------

    def save_recording(self, row: RecordingRow, windows: WindowRows | None = None, copy_from: int | None = None) -> int:
        self.begin_write()
        rec_id, removed, added = self.catalog.save_recording(row, windows, copy_from=copy_from)
        self.store.remove(removed)
        if len(added):
            vectors = windows.vectors if copy_from is None else self.catalog.vectors_for(added, self.manifest.dim)
            self.store.add(added, vectors)
        self._wrote(vectors_changed=bool(len(removed) or len(added)))
        return rec_id

    def delete_recordings(self, recording_ids: Sequence[int]) -> int:
        self.begin_write()
        removed = self.catalog.delete_recordings(recording_ids)
        self.store.remove(removed)
        self._wrote(vectors_changed=bool(len(removed)))
        return len(removed)

    def import_metadata(self, csv_path: Path) -> int:
        """Merge a metadata CSV (``Catalog.import_metadata``); returns the rows read."""
        self.begin_write()
        rows = self.catalog.import_metadata(csv_path)
        self._wrote(vectors_changed=False)
        return rows

    def begin_write(self) -> None:
        """Take the writer lock (held until ``end_write`` or close); what other processes committed
        before we had it is folded into the in-memory index first."""
        if self.read_only:
            raise ArchiveError("This archive was opened read-only.")
        if not self._writer.held:
            self._writer.acquire()
            self.refresh()

    def end_write(self) -> None:
        """Save the index file and let other writers in."""
        try:
            self.flush()
        finally:
            self._writer.release()

    def _wrote(self, vectors_changed: bool) -> None:
        """Under the writer lock nobody else changes windows, so the index reflects the catalog now."""
        self._store_generation = self.catalog.generation()
        self._file_stale |= vectors_changed
        self._manifest_stale = True

    def flush(self) -> None:
        """Write the vector index atomically (when its windows changed), then record in the
        manifest the generation it reflects.

        Only a writer does this. A process without the writer lock takes it for the write if it
        is free, and writes only if no writer has saved a file as new as its own since it read
        the manifest; when another process holds the lock, the file is left to it."""
        if self.read_only or not (self._file_stale or self._manifest_stale):
            return
        writing = self._writer.held
        with self._writer.briefly() as ours:
            if not ours:
                return
            on_disk = Manifest.load(self.directory).index_generation
            if not writing and on_disk != self.manifest.index_generation and on_disk >= self._store_generation:
                self._file_stale = self._manifest_stale = False  # a writer saved one as new since we read it
                return
            if self._file_stale:
                self.store.save(self.directory / INDEX_FILE)
            self.manifest = self.manifest.with_generation(self._store_generation)
            self.manifest.save(self.directory)
            self._file_stale = self._manifest_stale = False

    # --- reading ---------------------------------------------------------------------------------

    def info(self) -> ArchiveInfo:
        con = self.catalog.con
        indexed, failed, seconds, last = self.catalog.one(
            "SELECT count(*) FILTER (WHERE status = 'indexed'), count(*) FILTER (WHERE status = 'failed'),"
            " coalesce(sum(duration_s) FILTER (WHERE status = 'indexed'), 0), max(indexed_at) FROM recordings"
        )
        failures = [
            FailedFile(*row)
            for row in con.execute(
                "SELECT path, error_kind, error FROM recordings WHERE status = 'failed' ORDER BY path"
            ).fetchall()
        ]
        disk = sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())
        m = self.manifest
        return ArchiveInfo(
            directory=self.directory, recordings=int(indexed), failed=int(failed), hours=float(seconds) / 3600,
            windows=self.catalog.window_count(), vectors=len(self.store), model_id=m.model_id, revision=m.revision,
            dim=m.dim, window_s=m.window_s, hop_s=m.hop_s, index_factory=m.index_factory, disk_bytes=disk,
            metadata_columns=self.catalog.metadata_columns(), last_indexed_at=last, failures=failures,
        )

    def window_vectors(self, window_ids: Sequence[int]) -> np.ndarray:
        return self.catalog.vectors_for(window_ids, self.manifest.dim)


def _create(directory: Path, new: NewArchive, store_config: StoreConfig) -> tuple[Catalog, Manifest]:
    """A new archive's catalog and manifest, made under the writer lock (two first runs at once)."""
    directory.mkdir(parents=True, exist_ok=True)
    with WriterLock(directory):
        catalog = Catalog.open(directory)
        try:
            if (directory / MANIFEST_FILE).exists():  # the other first run made it meanwhile
                return catalog, Manifest.load(directory)
            if catalog.window_count():
                raise ArchiveError(f"{directory} holds a catalog without a manifest; it is not a usable archive.")
            manifest = Manifest.new(new.identity, new.windows, store_config.factory, new.logit_scale)
            manifest.save(directory)
        except BaseException:
            catalog.close()
            raise
    return catalog, manifest
