"""An archive directory on disk: the catalog, the vector segments, the ANN index and the manifest.

This layer knows no model: a new archive is told the identity of the model that will fill it
(``NewArchive``), and vectors arrive already computed. ``indexer.session`` adds the model.

A round of files' vectors is appended to the segment files and fsynced, then one catalog
transaction records the recordings, their windows and the id counter that vouches for those rows;
a run killed between the two leaves rows nobody counts, which the next writer cuts off. Readers
open the segments by memory-mapping (``VectorStore``), in time independent of the archive's
size, and reopen them when the catalog's generation moves. One process writes at a time
(``locks.WriterLock``): a second ``index`` is refused with one sentence.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from indexer.archive import ann_build, compaction
from indexer.archive.ann import AnnRecord
from indexer.archive.catalog import CATALOG_FILE, Catalog
from indexer.archive.locks import WriterLock
from indexer.archive.manifest import MANIFEST_FILE, Manifest
from indexer.archive.records import RecordingRow, WindowRows
from indexer.archive.segments import SEGMENTS_DIR, Appended, SegmentFiles
from indexer.archive.text_cache import remembered_vectors
from indexer.archive.vector_store import StoreConfig, StoredLayout, VectorStore
from indexer.config import WindowConfig
from indexer.embedding import ModelIdentity
from indexer.errors import ArchiveDamagedError, ArchiveError, ArchiveNotFoundError, ModelMismatchError

if TYPE_CHECKING:
    from indexer.archive.bulk_commit import FileWrite, Saved


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
    ann: AnnRecord | None
    disk_bytes: int
    metadata_columns: list[str]
    last_indexed_at: datetime | None
    failures: list[FailedFile]
    device_kind: str | None = None
    """How the vectors were computed (the manifest's record; None before the first run that embedded)."""
    precision: str | None = None
    batch_size: int | None = None
    reclaimable: compaction.Reclaimable | None = None
    """What ``soundtrace compact`` would free."""


class ArchiveStorage:
    """The archive's files: every live window of the catalog has its row in the segment files."""

    def __init__(self, directory: Path, catalog: Catalog, manifest: Manifest, read_only: bool, store_config: StoreConfig):
        self.directory = directory
        self.catalog = catalog
        self.manifest = manifest
        self.read_only = read_only
        self.store_config = store_config
        self.segment_files = SegmentFiles(directory, manifest.dim)
        self._writer = WriterLock(directory)
        self._store: VectorStore | None = None
        self._store_generation = -1
        """The catalog generation ``_store`` was opened at."""

    # --- opening -------------------------------------------------------------------------------

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether ``directory`` holds an archive; ``ArchiveDamagedError`` when it holds part of one
        (a catalog deleted beside its vectors must never be replaced by an empty one)."""
        directory = Path(directory).expanduser().resolve()
        catalog, manifest = (directory / CATALOG_FILE).exists(), (directory / MANIFEST_FILE).exists()
        if manifest and not catalog:
            raise ArchiveDamagedError(
                f"The archive at {directory} has lost its catalog ({directory / CATALOG_FILE} is missing); its vectors "
                "cannot be used without it — restore catalog.duckdb from a backup, or index the recordings into a new "
                "--archive directory."
            )
        return catalog and manifest

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
            catalog = _open_catalog(directory, read_only)
        elif new is not None:
            catalog, manifest = _create(directory, new)
        else:
            raise ArchiveNotFoundError(
                f"No soundtrace archive at {directory}; run `soundtrace index FOLDER --archive {directory}` first."
            )
        try:
            if identity is not None:
                manifest.check_model(identity)
            if windows is not None:
                manifest.check_windows(windows)
            archive = cls(directory, catalog, manifest, read_only, store_config, **extra)
        except Exception:
            catalog.close()
            raise
        return archive

    @property
    def store(self) -> VectorStore:
        """The committed vectors, reopened (a few memory maps, each file verified cheaply) when the
        catalog has moved on; ``ArchiveDamagedError`` names a file that is not as the catalog says."""
        generation = self.catalog.generation()
        if self._store is None or generation != self._store_generation:
            self._store = VectorStore.open(self.directory, self.manifest.dim, self.layout(), self.store_config)
            self._store_generation = generation
        return self._store

    def layout(self) -> StoredLayout:
        catalog = self.catalog
        return StoredLayout(catalog.next_window_id(), catalog.dead_window_ids(), catalog.vector_chunks(), catalog.ann_entry())

    def refresh(self) -> None:
        """Pick up what other processes committed (the next use of ``store`` does it anyway)."""
        self._store = None

    @property
    def generation(self) -> int:
        """The catalog generation the vectors were read at (a cache key for readers)."""
        self.store
        return self._store_generation

    def close(self) -> None:
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

    def save_files(self, writes: Sequence[FileWrite], new_only: bool = False) -> list[Saved]:
        """Files written in rounds of a handful of statements (``bulk_commit``), each as if written
        one at a time in order: the round's vectors to the segments (durably, in one write), then
        the one catalog transaction that vouches for them. ``new_only``: refuse paths already in
        the catalog. Returns per write its recording id and row (None for a touch)."""
        from indexer.archive import bulk_commit  # Arrow tables: a reader of the archive never needs them

        self.begin_write()
        existing: dict[str, int] = {}
        if any(w.copy_from is not None for w in writes):  # a reuse may depend on a recording replaced before it
            existing = dict(self.catalog.con.execute(
                "SELECT path, id FROM recordings WHERE list_contains(?, path)", [[w.path for w in writes]]).fetchall())
        saved: list[Saved] = []
        for part in bulk_commit.rounds(writes, existing):
            first = self.catalog.next_window_id()
            prepared = bulk_commit.prepare(self.catalog.con, part, lambda ids: self.store.vectors(ids))
            written = self._append(first, prepared.vectors)
            saved.extend(bulk_commit.commit(self.catalog, prepared, first, written.chunks, new_only))
            self.segment_files.mark_committed(written.segments)
        return saved

    def add_recordings(self, rows: Sequence[RecordingRow], windows: Sequence[WindowRows]) -> np.ndarray:
        """Many new recordings at once (an import of vectors computed elsewhere) in one round:
        vectors first, then one transaction. Returns their ids."""
        if len({row.path for row in rows}) != len(rows):
            raise ArchiveError("Some of these recordings are in the archive already; index them instead.")
        from indexer.archive.bulk_commit import FileWrite

        saved = self.save_files([FileWrite.save(row, w) for row, w in zip(rows, windows)], new_only=True)
        return np.array([s.recording_id for s in saved], np.int64)

    def _append(self, first: int, vectors: np.ndarray | None) -> Appended:
        """Rows for ids ``first …`` into the segment files, durably; nothing counts until the
        catalog transaction that records the returned chunks commits."""
        if vectors is None or not len(vectors):
            return Appended([], [])
        chunks = self.catalog.vector_chunks(last_segment=True)  # per recording: the newest file only
        committed = self.segment_files.committed(chunks, first)
        return self.segment_files.append(first, vectors, committed, chunks[-1] if chunks else None)

    def delete_recordings(self, recording_ids: Sequence[int]) -> int:
        self.begin_write()
        return len(self.catalog.delete_recordings(recording_ids))

    def import_metadata(self, csv_path: Path) -> int:
        """Merge a metadata CSV (``Catalog.import_metadata``); returns the rows read."""
        self.begin_write()
        return self.catalog.import_metadata(csv_path)

    @property
    def channel_mode(self) -> str | None:
        """"mix" or "split" once a run asked for one by name or indexed a recording with more than
        one channel (archives from before the manifest recorded it show it in their windows); None
        until then."""
        return self.manifest.channels or self.catalog.channel_mode_seen()

    def check_channel_mode(self, asked: str | None) -> str:
        """The channel mode an indexing run uses: the archive's own, which ``asked`` must not
        contradict (one file's windows would be of another kind than its neighbours'), else
        ``asked``, else mix."""
        recorded = self.channel_mode
        if recorded is not None and asked is not None and asked != recorded:
            raise ModelMismatchError(
                f"This archive was indexed with --channels {recorded}; --channels {asked} would give its "
                f"recordings two kinds of windows — run with --channels {recorded} (or leave it out), "
                "or use a new --archive directory."
            )
        return recorded or asked or "mix"

    def record_channel_mode(self, asked: str | None) -> None:
        """After an indexing run, write its mode into the manifest: the one asked for by name, else
        the one the windows show once a multichannel file was indexed."""
        mode = asked or self.catalog.channel_mode_seen()
        if self.manifest.channels is None and mode is not None:
            self.begin_write()
            self.manifest = replace(self.manifest, channels=mode)
            self.manifest.save(self.directory)

    def begin_write(self, repairing: bool = False) -> None:
        """Take the writer lock (held until ``end_write`` or close), and cut off rows a killed run
        wrote but never committed; damage found meanwhile is named, unless ``repairing`` it."""
        if self.read_only:
            raise ArchiveError("This archive was opened read-only.")
        if not self._writer.held:
            self._writer.acquire()
            try:
                next_id = self.catalog.next_window_id()
                self.segment_files.discard_uncommitted(self.segment_files.committed(self.catalog.vector_chunks(), next_id), next_id)
                compaction.finish_leftovers(self.directory, self.catalog)
            except ArchiveDamagedError:
                if not repairing:
                    self._writer.release()
                    raise
            except BaseException:
                self._writer.release()
                raise
            self.refresh()

    @contextmanager
    def writes_held(self) -> Iterator[None]:
        """Nobody writes the archive meanwhile (this process's own lock, or a borrowed one for a
        read-only opening): what ``check`` reads stays still."""
        if self._writer.held:
            yield
            return
        with WriterLock(self.directory):
            yield

    def end_write(self) -> None:
        """Let other writers in."""
        self._writer.release()

    def maintain_ann(self, progress: ann_build.Progress | None = None) -> AnnRecord | None:
        """After an indexing run: build, extend or drop the ANN index as the archive's size asks
        (built aside and swapped in; searches meanwhile use the previous one)."""
        store = self.store
        step = ann_build.plan(store, self.store_config)
        if step in ("none", "keep"):
            return store.ann.record if store.ann else None
        self.begin_write()
        remembered = remembered_vectors(self.catalog, self.manifest.identity)
        self.catalog.yield_lock()  # the build reads only the segment files: readers may use the catalog
        try:
            entry = ann_build.maintain(self.directory, step, store, remembered, self.store_config,
                                       progress or ann_build.no_progress)
            self.catalog.set_ann_entry(entry)  # the swap: readers opening from now on use it
            ann_build.tidy(self.directory, keep=entry.record.file if entry else None)
            return entry.record if entry else None
        finally:
            self.refresh()

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
        disk = sum(p.stat().st_size for folder in (self.directory, self.directory / SEGMENTS_DIR, self.catalog.run_files.folder)
                   if folder.is_dir() for p in folder.iterdir() if p.is_file())
        store = self.store
        m = self.manifest
        return ArchiveInfo(
            directory=self.directory, recordings=int(indexed), failed=int(failed), hours=float(seconds) / 3600,
            windows=self.catalog.window_count(), vectors=len(store), model_id=m.model_id, revision=m.revision,
            dim=m.dim, window_s=m.window_s, hop_s=m.hop_s,
            index_factory=(store.ann.record.factory if store.ann_trusted else
                           f"exact (float16; {store.ann.record.factory} below its recall target)" if store.ann else
                           f"exact (float16; the ANN index is not used: {store.ann_damage} — `soundtrace check --repair` "
                           "builds it again)" if store.ann_damage else "exact (float16)"),
            ann=store.ann.record if store.ann else None, disk_bytes=disk,
            metadata_columns=self.catalog.metadata_columns(), last_indexed_at=last, failures=failures,
            device_kind=m.device_kind, precision=m.precision, batch_size=m.batch_size,
            reclaimable=compaction.reclaimable(self.catalog, store),
        )

    def window_vectors(self, window_ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``window_ids``, in that order (float32)."""
        try:
            return self.store.vectors(window_ids)
        except KeyError:
            raise ArchiveError("Some requested windows are not in the archive.") from None


def _open_catalog(directory: Path, read_only: bool) -> Catalog:
    """The catalog, migrated first (under the writer lock, whoever opens it) if it is older than
    this code: a migration moves vectors, which only the writer may do."""
    catalog = Catalog.open(directory, read_only=read_only, migrate=False)
    if not catalog.needs_migration():
        return catalog
    catalog.close()
    with WriterLock(directory):
        Catalog.open(directory).close()
        Manifest.load(directory).upgraded().save(directory)
    return Catalog.open(directory, read_only=read_only, migrate=False)


def _create(directory: Path, new: NewArchive) -> tuple[Catalog, Manifest]:
    """A new archive's catalog and manifest, made under the writer lock (two first runs at once)."""
    directory.mkdir(parents=True, exist_ok=True)
    with WriterLock(directory):
        catalog = Catalog.open(directory)
        try:
            if (directory / MANIFEST_FILE).exists():  # the other first run made it meanwhile
                return catalog, Manifest.load(directory)
            if catalog.window_count():
                raise ArchiveError(f"{directory} holds a catalog without a manifest; it is not a usable archive.")
            manifest = Manifest.new(new.identity, new.windows, new.logit_scale)
            manifest.save(directory)
        except BaseException:
            catalog.close()
            raise
    return catalog, manifest
