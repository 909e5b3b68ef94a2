"""Indexing: files -> windows -> vectors -> archive, incremental and safe to kill at any moment.

Both engines plan the same way (unchanged files skipped before any audio is read) and commit
through ``commits.Committer``, strictly in file order. The local engine: a pool of low-priority
child processes (``decoder_pool``) hashes and decodes files and cuts windows while this process
runs the model on full batches (batches span files, so short clips still fill them). The Ray
engine (``ray_engine``) does the same work on a cluster.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Literal, Protocol, Sequence

import numpy as np

from indexer.archive.storage import FailedFile
from indexer.audio.sources import discover, kernel_folder, key_path
from indexer.audio.windows import Window
from indexer.config import DecodeOptions, RayOptions
from indexer.embedding import PendingVectors, embedding_setup, submit_audio
from indexer.indexing.commits import Committer, PendingFile
from indexer.indexing.decoder_pool import DecoderPool, default_decoders
from indexer.indexing.decoder_process import IDLE, WINDOW, DecodeJob, Outcome
from indexer.indexing.one_file import no_vector_reason
from indexer.indexing.shards import STAGING_DIR, clear_committed
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
    decoders: int | None = None
    """Decoding processes of the local engine; None: the machine's cores minus one, at least two.
    The archive is the same whatever the number."""
    metadata: tuple[Path, ...] = ()
    """Metadata CSVs merged into the catalog before indexing."""
    engine: Literal["local", "ray"] = "local"
    """Where the audio is decoded and embedded: this process, or a Ray cluster (same archive, same bits)."""
    ray: RayOptions = RayOptions()


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
    """Where the time went: in the model, committing to the archive, and (local engine) the model
    waiting for decoded audio; the rest is planning, start-up and bookkeeping."""
    commit_seconds: float = 0.0
    decode_wait_seconds: float = 0.0
    recording_ids: list[int] = field(default_factory=list)
    """Recordings this run wrote (indexed, reused or failed): what standing audits look at."""
    audits: list = field(default_factory=list)
    """``audit.StandingUpdate`` per standing audit extended after the run."""
    ann: object | None = None
    """The ``AnnRecord`` in force after the run (None: searches scan exactly)."""
    marks_unplaced: int = 0
    """Label marks whose audio this run took out of the archive (changed or pruned files); kept, not lost."""
    notes: list[str] = field(default_factory=list)
    """Sentences for the person running it, e.g. that this run embeds unlike the archive's first."""

    @property
    def windows_per_second(self) -> float:
        return self.windows_added / self.elapsed_s if self.elapsed_s else 0.0


class ProgressSink(Protocol):
    """What the pipeline tells a progress display; the CLI renders it, tests may count it."""

    def stage(self, message: str) -> None:
        """What the run is doing where no file advances: looking for files, loading the model."""

    def start(self, files: int, total_bytes: int) -> None: ...

    def file_done(self, path: Path, outcome: str, size_bytes: int, audio_s: float) -> None: ...

    def windows_embedded(self, count: int) -> None: ...

    def finish(self) -> None: ...


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a run will do, decided the same way by every engine before any audio is read."""

    todo: list[PendingFile]
    job: DecodeJob
    discovered: set[str]


def run_indexing(
    archive: Session, paths: Sequence[Path], options: IndexOptions, progress: ProgressSink | None = None
) -> IndexReport:
    started = time.perf_counter()
    report = IndexReport()
    asked = options.decode.channels
    options = replace(options, decode=replace(options.decode, channels=archive.check_channel_mode(asked)))
    if progress:
        progress.stage("looking for recordings")
    plan = _plan(archive, paths, options, report)
    if progress:
        progress.start(len(plan.todo), sum(p.source.size_bytes for p in plan.todo))
    committer = Committer(archive, report, progress)
    archive.catalog.yield_lock()  # planning is done: readers may use the catalog until the first commit
    try:
        if plan.todo and options.engine == "ray":
            from indexer.indexing.ray_engine import embed_on_ray  # ray loads only when asked for

            report.model_seconds = embed_on_ray(archive, plan, options, committer)
        elif plan.todo:
            report.model_seconds = _embed_here(archive, plan, options, committer)
        clear_committed(options.ray.staging or archive.directory / STAGING_DIR, archive.catalog.indexed_hashes())
        if options.prune:
            report.pruned = _prune(archive, paths, plan.discovered)
        archive.record_channel_mode(asked)
    finally:
        if progress:
            progress.finish()
    report.elapsed_s = time.perf_counter() - started
    return report


def _plan(archive: Session, paths: Sequence[Path], options: IndexOptions, report: IndexReport) -> Plan:
    for csv_path in options.metadata:  # a bad CSV fails before the folders are walked
        report.metadata_rows.append((csv_path, archive.import_metadata(csv_path)))
    found = discover(paths)
    report.discovered, report.ignored, report.unlisted_folders = len(found.files), found.ignored, found.unlisted_folders
    known = archive.catalog.known_files()
    todo: list[PendingFile] = []
    for src in found.files:
        seen = known.get(src.key)
        unchanged = seen is not None and seen.size_bytes == src.size_bytes and seen.mtime == src.mtime
        if unchanged and not (options.retry_failed and seen.status == "failed"):
            report.unchanged += 1
        else:
            todo.append(PendingFile(src))
    job = DecodeJob([p.source for p in todo], known, archive.catalog.indexed_hashes(), archive.manifest.windows, options.decode)
    return Plan(todo, job, {src.key for src in found.files})


def _embed_here(archive: Session, plan: Plan, options: IndexOptions, committer: Committer) -> float:
    """The local engine: decoding child processes ahead of the model in this one. Returns model seconds."""
    batcher = _Batcher(archive, committer)
    decoders = DecoderPool(plan.job, options.decoders or default_decoders(), options.queue_windows)
    for item in plan.todo:  # committed in the plan's order, whichever decoder finishes first
        committer.register(item)
    try:
        for kind, index, payload in _timed(decoders.messages(), committer.report):
            if kind == IDLE:  # waiting for the decoders: commit what is due, then let readers in
                batcher.collect()
                committer.commit_ready()
                archive.catalog.yield_lock()
                continue
            item = plan.todo[index]
            if kind == WINDOW:
                batcher.add_window(item, payload)
            else:
                batcher.settle(item, payload)
            committer.commit_ready()
        batcher.embed_pending()
        batcher.collect()
        committer.commit_ready(final=True)
    finally:
        decoders.stop()
    return batcher.model_seconds


def _timed(messages: Iterator, report: IndexReport) -> Iterator:
    """The decoder's messages, counting the time the model spent waiting for them."""
    while True:
        started = time.perf_counter()
        message = next(messages, None)
        report.decode_wait_seconds += time.perf_counter() - started
        if message is None:
            return
        yield message


class _Batcher:
    """The main thread's half of the local engine: batches windows through the model.

    The catalog is held only while committing: it is let go before every model call and whenever
    the decoder keeps us waiting, so a slow file never keeps searches or the app waiting (and a
    run of quick commits, touched or failed files, does not reopen it for each one)."""

    def __init__(self, archive: Session, committer: Committer):
        self.archive = archive
        self.committer = committer
        self.batch: list[tuple[PendingFile, int]] = []
        self.in_flight: tuple[list[tuple[PendingFile, int]], PendingVectors] | None = None
        self.model_seconds = 0.0
        self.noted = False

    @property
    def batch_size(self) -> int:
        return max(1, int(getattr(self.encoder, "batch_size", 8)))

    @property
    def encoder(self):
        """The archive's model, loaded on the first window (a run of unchanged files never loads it)."""
        progress = self.committer.progress
        if progress and not self.archive.encoder_loaded:
            progress.stage("loading the model")
            self.archive.encoder
            progress.stage("indexing")
        if not self.noted:  # recorded in (or compared with) the manifest once, before the first batch
            self.noted = True
            if note := self.archive.embedding_note(embedding_setup(self.archive.encoder)):
                self.committer.report.notes.append(note)
        return self.archive.encoder

    def add_window(self, item: PendingFile, window: Window) -> None:
        if item.failed:
            return
        item.windows.append(window)
        self.batch.append((item, len(item.windows) - 1))
        if len(self.batch) >= self.batch_size:
            self.embed_pending()

    def settle(self, item: PendingFile, outcome: Outcome) -> None:
        item.outcome = outcome
        if item.failed:
            item.windows, item.vectors = [], {}

    def embed_pending(self) -> None:
        """Send the batch to the model and collect the one before it: on a GPU the model works on
        this batch while the next one is gathered (on the CPU the call returns when done)."""
        live = [(item, i) for item, i in self.batch if not item.failed]
        self.batch = []
        if not live:
            return
        self.archive.catalog.yield_lock()
        t0 = time.perf_counter()
        pending = submit_audio(self.encoder, [item.windows[i].samples for item, i in live])
        self.model_seconds += time.perf_counter() - t0
        self.collect()
        self.in_flight = (live, pending)

    def collect(self) -> None:
        """The vectors of the batch in the model, if any, into their files."""
        if self.in_flight is None:
            return
        live, pending = self.in_flight
        self.in_flight = None
        t0 = time.perf_counter()
        vectors = pending.result()
        self.model_seconds += time.perf_counter() - t0
        usable = np.isfinite(vectors).all(axis=1)
        for (item, i), vector, ok in zip(live, vectors, usable):
            if item.failed:
                continue
            if not ok:
                item.reject(no_vector_reason(item.source.path.name, item.windows[i]))
                continue
            item.vectors[i] = vector
            item.windows[i] = item.windows[i].released()
        if self.committer.progress:
            self.committer.progress.windows_embedded(len(live))


def _prune(archive: Session, roots: Sequence[Path], discovered: set[str]) -> int:
    """Recordings under ``roots`` whose files no longer exist leave the archive (a file this run
    found is never gone, whatever its catalog key looks like); so do failed rows this run did not
    find: under ``roots`` (no longer a candidate), gone from disk, or in /proc or /sys."""
    resolved = [Path(r).expanduser().resolve() for r in roots]
    gone = []
    for path, known in archive.catalog.known_files().items():
        if path in discovered:
            continue
        p = key_path(path)
        under = any(p == r or r in p.parents for r in resolved)
        if known.status == "failed" and (under or kernel_folder(p) or not os.path.lexists(p)):
            gone.append(known.recording_id)
        elif under and not os.path.lexists(p):
            gone.append(known.recording_id)
    archive.delete_recordings(gone)
    return len(gone)
