"""Indexing: files -> windows -> vectors -> archive, incremental and safe to kill at any moment.

A low-priority child process (``decoding``) hashes and decodes files and cuts windows while this
process runs the model on full batches (batches span files, so short clips still fill them). Recordings are
committed strictly in file order, each in one catalog transaction, so a run that is killed and
started again ends with exactly the archive an uninterrupted run would have produced.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from indexer.archive.records import WindowRows
from indexer.archive.storage import FailedFile
from indexer.audio.sources import SourceFile, discover
from indexer.audio.windows import Window
from indexer.config import DecodeOptions
from indexer.indexing.decoder_process import IDLE, WINDOW, DecodeJob, DecoderProcess, Outcome, failed_outcome
from indexer.indexing.one_file import no_vector_reason
from indexer.session import Session


@dataclass(frozen=True)
class IndexOptions:
    decode: DecodeOptions = DecodeOptions()
    prune: bool = False
    """Drop recordings under the given folders whose files are gone."""
    retry_failed: bool = False
    """Try files that failed before even when they have not changed."""
    queue_windows: int = 16
    """Decoded windows allowed to wait for the model; bounds memory."""
    metadata: tuple[Path, ...] = ()
    """Metadata CSVs merged into the catalog before indexing."""


@dataclass
class IndexReport:
    discovered: int = 0
    ignored: int = 0
    """Files under the named folders whose extension is not an audio one."""
    unlisted_folders: list[str] = field(default_factory=list)
    metadata_rows: list[tuple[Path, int]] = field(default_factory=list)
    """(CSV, rows read) per metadata file imported."""
    indexed: int = 0
    unchanged: int = 0
    reused: int = 0
    failed: list[FailedFile] = field(default_factory=list)
    pruned: int = 0
    windows_added: int = 0
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0
    model_seconds: float = 0.0
    recording_ids: list[int] = field(default_factory=list)
    """Recordings this run wrote (indexed, reused or failed): what standing audits look at."""
    audits: list = field(default_factory=list)
    """``audit.StandingUpdate`` per standing audit extended after the run."""
    ann: object | None = None
    """The ``AnnRecord`` in force after the run (None: searches scan exactly)."""

    @property
    def windows_per_second(self) -> float:
        return self.windows_added / self.elapsed_s if self.elapsed_s else 0.0


class ProgressSink(Protocol):
    """What the pipeline tells a progress display; the CLI renders it, tests may count it."""

    def start(self, files: int, total_bytes: int) -> None: ...

    def file_done(self, path: Path, outcome: str, size_bytes: int, audio_s: float) -> None: ...

    def windows_embedded(self, count: int) -> None: ...

    def finish(self) -> None: ...


# --- files in flight ----------------------------------------------------------------------------


@dataclass
class _Pending:
    """One file on its way through; committed when its outcome is known and its windows embedded."""

    source: SourceFile
    outcome: Outcome | None = None
    windows: list[Window] = field(default_factory=list)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)

    rejected: str | None = None
    """Why the model's output for this file cannot be stored (it becomes a failure)."""

    @property
    def failed(self) -> bool:
        return self.rejected is not None or (self.outcome is not None and self.outcome.kind == "failed")

    @property
    def ready(self) -> bool:
        return self.outcome is not None and (self.failed or len(self.vectors) == len(self.windows))




# --- the run ----------------------------------------------------------------------------------


def run_indexing(
    archive: Session, paths: Sequence[Path], options: IndexOptions, progress: ProgressSink | None = None
) -> IndexReport:
    started = time.perf_counter()
    report = IndexReport()
    for csv_path in options.metadata:  # a bad CSV fails before the folders are walked
        report.metadata_rows.append((csv_path, archive.import_metadata(csv_path)))
    found = discover(paths)
    report.discovered, report.ignored, report.unlisted_folders = len(found.files), found.ignored, found.unlisted_folders
    known = archive.catalog.known_files()
    todo: list[_Pending] = []
    for src in found.files:
        seen = known.get(src.key)
        unchanged = seen is not None and seen.size_bytes == src.size_bytes and seen.mtime == src.mtime
        if unchanged and not (options.retry_failed and seen.status == "failed"):
            report.unchanged += 1
        else:
            todo.append(_Pending(src))
    if progress:
        progress.start(len(todo), sum(p.source.size_bytes for p in todo))
    runner = _Runner(archive, report, progress)
    decoder = DecoderProcess(
        DecodeJob([p.source for p in todo], known, archive.catalog.indexed_hashes(), archive.manifest.windows, options.decode),
        options.queue_windows,
    )
    archive.catalog.yield_lock()  # planning is done: readers may use the catalog until the first commit
    try:
        for kind, index, payload in decoder.messages() if todo else ():
            if kind == IDLE:  # waiting for the decoder: readers may use the catalog meanwhile
                archive.catalog.yield_lock()
                continue
            item = todo[index]
            if kind == WINDOW:
                runner.add_window(item, payload)
            else:
                runner.settle(item, payload)
            runner.commit_ready()
        runner.embed_pending()
        runner.commit_ready()
        if options.prune:
            report.pruned = _prune(archive, paths, {src.key for src in found.files})
    finally:
        decoder.stop()
        if progress:
            progress.finish()
    report.model_seconds = runner.model_seconds
    report.elapsed_s = time.perf_counter() - started
    return report


class _Runner:
    """The main thread's half: batches windows through the model and commits in file order.

    The catalog is held only while committing: it is let go before every model call and whenever
    the decoder keeps us waiting, so a slow file never keeps searches or the app waiting (and a
    run of quick commits, touched or failed files, does not reopen it for each one)."""

    def __init__(self, archive: Session, report: IndexReport, progress: ProgressSink | None):
        self.archive = archive
        self.report = report
        self.progress = progress
        self.batch: list[tuple[_Pending, int]] = []
        self.order: OrderedDict[int, _Pending] = OrderedDict()
        self.model_seconds = 0.0

    @property
    def batch_size(self) -> int:
        return max(1, int(getattr(self.archive.encoder, "batch_size", 8)))

    def add_window(self, item: _Pending, window: Window) -> None:
        self.order.setdefault(id(item), item)
        if item.failed:
            return
        item.windows.append(window)
        self.batch.append((item, len(item.windows) - 1))
        if len(self.batch) >= self.batch_size:
            self.embed_pending()

    def settle(self, item: _Pending, outcome: Outcome) -> None:
        item.outcome = outcome
        if item.failed:
            item.windows, item.vectors = [], {}
        self.order.setdefault(id(item), item)

    def reject(self, item: _Pending, reason: str) -> None:
        """The model gave this file's audio no usable vector: it fails, its other windows are skipped."""
        item.rejected = reason
        item.windows, item.vectors = [], {}

    def embed_pending(self) -> None:
        live = [(item, i) for item, i in self.batch if not item.failed]
        self.batch = []
        if not live:
            return
        self.archive.catalog.yield_lock()
        t0 = time.perf_counter()
        vectors = self.archive.encoder.embed_audio([item.windows[i].samples for item, i in live])
        self.model_seconds += time.perf_counter() - t0
        usable = np.isfinite(vectors).all(axis=1)
        for (item, i), vector, ok in zip(live, vectors, usable):
            if item.failed:
                continue
            if not ok:
                self.reject(item, no_vector_reason(item.source.path.name, item.windows[i]))
                continue
            item.vectors[i] = vector
            item.windows[i] = item.windows[i].released()
        if self.progress:
            self.progress.windows_embedded(len(live))

    def commit_ready(self) -> None:
        while self.order:
            item = next(iter(self.order.values()))
            if not item.ready:
                return
            self.order.popitem(last=False)
            self._commit(item)

    def _commit(self, item: _Pending) -> None:
        src, report, outcome = item.source, self.report, item.outcome
        if item.rejected is not None and outcome.kind != "failed":
            digest = outcome.row.content_hash if outcome.row is not None else None
            outcome = failed_outcome(src, digest, "invalid_vector", item.rejected)
        audio_s = 0.0
        if outcome.kind == "touched":
            self.archive.catalog.touch(outcome.recording_id, src.size_bytes, src.mtime)
            report.unchanged += 1
        elif outcome.kind == "reused":
            row = self.archive.catalog.clone_row(outcome.recording_id, src.key, src.size_bytes, src.mtime)
            report.recording_ids.append(self.archive.save_recording(row, copy_from=outcome.recording_id))
            report.reused += 1
            audio_s = row.duration_s or 0.0
        elif outcome.kind == "failed":
            report.recording_ids.append(self.archive.save_recording(outcome.row))
            report.failed.append(FailedFile(src.key, outcome.row.error_kind, outcome.row.error))
        else:
            rows = _window_rows(item.windows, np.stack([item.vectors[i] for i in range(len(item.windows))]))
            report.recording_ids.append(self.archive.save_recording(outcome.row, rows))
            report.indexed += 1
            report.windows_added += len(rows)
            audio_s = outcome.row.duration_s or 0.0
        report.audio_seconds += audio_s
        item.windows, item.vectors = [], {}
        if self.progress:
            self.progress.file_done(src.path, outcome.kind, src.size_bytes, audio_s)


def _window_rows(windows: list[Window], vectors: np.ndarray) -> WindowRows:
    q = [w.quality for w in windows]
    return WindowRows(
        channel=np.array([w.channel for w in windows]),
        start_s=np.array([w.start_s for w in windows]),
        end_s=np.array([w.end_s for w in windows]),
        rms_db=np.array([x.rms_db for x in q]),
        peak=np.array([x.peak for x in q]),
        clipped_fraction=np.array([x.clipped_fraction for x in q]),
        silent_fraction=np.array([x.silent_fraction for x in q]),
        vectors=vectors,
    )


def _prune(archive: Session, roots: Sequence[Path], discovered: set[str]) -> int:
    """Recordings under ``roots`` whose files no longer exist leave the archive (a file this run
    found is never gone, whatever its catalog key looks like)."""
    resolved = [Path(r).expanduser().resolve() for r in roots]
    gone = []
    for path, known in archive.catalog.known_files().items():
        p = Path(path)
        if path in discovered or not any(p == r or r in p.parents for r in resolved):
            continue
        if not os.path.lexists(p):
            gone.append(known.recording_id)
    archive.delete_recordings(gone)
    return len(gone)
