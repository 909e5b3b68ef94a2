"""Indexing: files -> windows -> vectors -> archive, incremental and safe to kill at any moment.

A background thread hashes and decodes files and cuts windows while the main thread runs the
model on full batches (batches span files, so short clips still fill them). Recordings are
committed strictly in file order, each in one catalog transaction, so a run that is killed and
started again ends with exactly the archive an uninterrupted run would have produced.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from . import audio
from .archive import Archive, FailedFile
from .catalog import RecordingRow, WindowRows
from .config import DecodeOptions
from .errors import AudioError, SilentAudioError
from .sources import SourceFile, content_hash, discover
from .windows import QualityAccumulator, Window, cut_windows


@dataclass(frozen=True)
class IndexOptions:
    decode: DecodeOptions = DecodeOptions()
    prune: bool = False
    """Drop recordings under the given folders whose files are gone."""
    retry_failed: bool = False
    """Try files that failed before even when they have not changed."""
    queue_windows: int = 16
    """Decoded windows allowed to wait for the model; bounds memory."""


@dataclass
class IndexReport:
    discovered: int = 0
    indexed: int = 0
    unchanged: int = 0
    reused: int = 0
    failed: list[FailedFile] = field(default_factory=list)
    pruned: int = 0
    windows_added: int = 0
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0
    model_seconds: float = 0.0

    @property
    def windows_per_second(self) -> float:
        return self.windows_added / self.elapsed_s if self.elapsed_s else 0.0


class ProgressSink(Protocol):
    """What the pipeline tells a progress display; the CLI renders it, tests may count it."""

    def start(self, files: int, total_bytes: int) -> None: ...

    def file_done(self, path: Path, outcome: str, size_bytes: int, audio_s: float) -> None: ...

    def windows_embedded(self, count: int) -> None: ...

    def finish(self) -> None: ...


# --- events from the decoding thread ----------------------------------------------------------


@dataclass
class _Outcome:
    """How a file ended in the decoding thread; applied by the main thread only."""

    kind: str  # "indexed" | "failed" | "touched" | "reused"
    row: RecordingRow | None = None
    recording_id: int | None = None  # the row to touch, or the recording whose windows are reused


@dataclass
class _Pending:
    """One file on its way through; committed when its outcome is known and its windows embedded.

    The decoding thread only appends to ``windows``; everything else is the main thread's.
    """

    source: SourceFile
    outcome: _Outcome | None = None
    windows: list[Window] = field(default_factory=list)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.outcome is not None and self.outcome.kind == "failed"

    @property
    def ready(self) -> bool:
        return self.outcome is not None and (self.failed or len(self.vectors) == len(self.windows))


_END = object()
_RELEASED = np.empty(0, np.float32)


class _Decoder(threading.Thread):
    """Hashes, decodes and windows files in order, feeding (pending, window) pairs to a queue."""

    def __init__(self, archive: Archive, todo: list[_Pending], options: IndexOptions, out: queue.Queue):
        super().__init__(name="soundtrace-decoder", daemon=True)
        self.todo = todo
        self.options = options
        self.out = out
        self.windows_cfg = archive.manifest.windows
        self.known = archive.catalog.known_files()
        self.hashes = archive.catalog.indexed_hashes()
        self.stop_requested = threading.Event()

    def run(self) -> None:
        try:
            for item in self.todo:
                if self.stop_requested.is_set():
                    return
                self._process(item)
        finally:
            self.out.put(_END)

    def _process(self, item: _Pending) -> None:
        src = item.source
        try:
            digest = content_hash(src.path)
        except OSError as exc:
            self._fail(item, None, "unreadable", f"{src.path.name} cannot be read: {exc.strerror or exc}.")
            return
        known = self.known.get(str(src.path))
        if known is not None and known.content_hash == digest and known.status == "indexed":
            self.out.put((item, _Outcome("touched", recording_id=known.recording_id)))
            return
        source_id = self.hashes.get(digest)
        if source_id is not None:
            self.out.put((item, _Outcome("reused", recording_id=source_id)))
            return
        try:
            info, blocks = audio.stream(src.path, self.options.decode)
            quality = QualityAccumulator()
            for window in cut_windows(blocks, self.windows_cfg):
                if self.stop_requested.is_set():
                    return
                quality.add_window(window)
                item.windows.append(window)
                self.out.put((item, len(item.windows) - 1))
            result = quality.result()
            if not item.windows:
                raise SilentAudioError(f"{src.path.name} holds no audio long enough to embed.")
            if result.is_silent:
                raise SilentAudioError(f"{src.path.name} is silent (flat line): nothing to index.")
        except AudioError as exc:
            self._fail(item, digest, _kind(exc), str(exc))
            return
        except Exception as exc:  # a decoder bug must not stop the run: record it and go on
            self._fail(item, digest, "internal", f"{src.path.name} could not be decoded ({type(exc).__name__}: {exc}).")
            return
        duration = max((w.end_s for w in item.windows), default=0.0)
        row = RecordingRow(
            path=str(src.path), content_hash=digest, size_bytes=src.size_bytes, mtime=src.mtime,
            status="indexed", duration_s=max(duration, info.duration_s if info.duration_s else 0.0),
            sample_rate=info.sample_rate, channels=info.channels, format=info.format, decoder=info.decoder,
            peak=result.peak, rms_db=result.rms_db, clipped_fraction=result.clipped_fraction,
            silent_fraction=result.silent_fraction, is_silent=result.is_silent, is_clipped=result.is_clipped,
        )
        self.out.put((item, _Outcome("indexed", row=row)))

    def _fail(self, item: _Pending, digest: str | None, kind: str, message: str) -> None:
        src = item.source
        row = RecordingRow(
            path=str(src.path), content_hash=digest, size_bytes=src.size_bytes, mtime=src.mtime,
            status="failed", error_kind=kind, error=message,
        )
        self.out.put((item, _Outcome("failed", row=row)))


def _kind(exc: AudioError) -> str:
    name = type(exc).__name__.removesuffix("Error")
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


# --- the run ----------------------------------------------------------------------------------


def run_indexing(
    archive: Archive, paths: Sequence[Path], options: IndexOptions, progress: ProgressSink | None = None
) -> IndexReport:
    started = time.perf_counter()
    report = IndexReport()
    sources = discover(paths)
    report.discovered = len(sources)
    known = archive.catalog.known_files()
    todo: list[_Pending] = []
    for src in sources:
        seen = known.get(str(src.path))
        unchanged = seen is not None and seen.size_bytes == src.size_bytes and seen.mtime == src.mtime
        if unchanged and not (options.retry_failed and seen.status == "failed"):
            report.unchanged += 1
        else:
            todo.append(_Pending(src))
    if progress:
        progress.start(len(todo), sum(p.source.size_bytes for p in todo))
    events: queue.Queue = queue.Queue(maxsize=max(2, options.queue_windows))
    decoder = _Decoder(archive, todo, options, events)
    runner = _Runner(archive, report, progress)
    decoder.start()
    try:
        while True:
            event = events.get()
            if event is _END:
                break
            item, what = event
            if isinstance(what, int):
                runner.add_window(item, what)
            else:
                runner.settle(item, what)
            runner.commit_ready()
        runner.embed_pending()
        runner.commit_ready()
        if options.prune:
            report.pruned = _prune(archive, paths)
    finally:
        decoder.stop_requested.set()
        _drain(events, decoder)
        archive.flush()
        if progress:
            progress.finish()
    report.model_seconds = runner.model_seconds
    report.elapsed_s = time.perf_counter() - started
    return report


class _Runner:
    """The main thread's half: batches windows through the model and commits in file order."""

    def __init__(self, archive: Archive, report: IndexReport, progress: ProgressSink | None):
        self.archive = archive
        self.report = report
        self.progress = progress
        self.batch: list[tuple[_Pending, int]] = []
        self.order: OrderedDict[int, _Pending] = OrderedDict()
        self.model_seconds = 0.0

    @property
    def batch_size(self) -> int:
        return max(1, int(getattr(self.archive.encoder, "batch_size", 8)))

    def add_window(self, item: _Pending, index: int) -> None:
        self.order.setdefault(id(item), item)
        self.batch.append((item, index))
        if len(self.batch) >= self.batch_size:
            self.embed_pending()

    def settle(self, item: _Pending, outcome: _Outcome) -> None:
        item.outcome = outcome
        if item.failed:
            item.windows, item.vectors = [], {}
        self.order.setdefault(id(item), item)

    def embed_pending(self) -> None:
        live = [(item, i) for item, i in self.batch if not item.failed]
        self.batch = []
        if not live:
            return
        t0 = time.perf_counter()
        vectors = self.archive.encoder.embed_audio([item.windows[i].samples for item, i in live])
        self.model_seconds += time.perf_counter() - t0
        for (item, i), vector in zip(live, vectors):
            item.vectors[i] = vector
            item.windows[i] = replace(item.windows[i], samples=_RELEASED)  # keep memory flat on long files
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
        audio_s = 0.0
        if outcome.kind == "touched":
            self.archive.catalog.touch(outcome.recording_id, src.size_bytes, src.mtime)
            report.unchanged += 1
        elif outcome.kind == "reused":
            row = self.archive.catalog.clone_row(outcome.recording_id, str(src.path), src.size_bytes, src.mtime)
            self.archive.save_recording(row, copy_from=outcome.recording_id)
            report.reused += 1
            audio_s = row.duration_s or 0.0
        elif outcome.kind == "failed":
            self.archive.save_recording(outcome.row)
            report.failed.append(FailedFile(str(src.path), outcome.row.error_kind, outcome.row.error))
        else:
            rows = _window_rows(item.windows, np.stack([item.vectors[i] for i in range(len(item.windows))]))
            self.archive.save_recording(outcome.row, rows)
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


def _prune(archive: Archive, roots: Sequence[Path]) -> int:
    """Recordings under ``roots`` whose files no longer exist leave the archive."""
    resolved = [Path(r).expanduser().resolve() for r in roots]
    gone = []
    for path, known in archive.catalog.known_files().items():
        p = Path(path)
        if any(p == r or r in p.parents for r in resolved) and not p.exists():
            gone.append(known.recording_id)
    archive.delete_recordings(gone)
    return len(gone)


def _drain(events: queue.Queue, decoder: threading.Thread) -> None:
    """Unblock a decoder stuck on a full queue so it can see the stop flag and exit."""
    while decoder.is_alive():
        try:
            events.get(timeout=0.05)
        except queue.Empty:
            pass
