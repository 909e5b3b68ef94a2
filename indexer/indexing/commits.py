"""Committing files to the archive strictly in file order, whichever engine embedded them.

Files are committed in the order the run planned them, a round of finished files at a time (one
vector write and one catalog transaction each, ``archive.bulk_commit``), so a run killed at any
moment and started again ends with exactly the archive an uninterrupted run would have produced
(recording and window ids included), whether its vectors came from this process or a Ray cluster.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from indexer.archive.bulk_commit import MAX_ROUND_BYTES, MAX_ROUND_FILES, FileWrite, Saved
from indexer.archive.records import WindowRows
from indexer.archive.storage import FailedFile
from indexer.audio.sources import SourceFile
from indexer.audio.windows import Window
from indexer.indexing.decoder_process import Outcome, failed_outcome
from indexer.session import Session


@dataclass
class PendingFile:
    """One file on its way through; committed when its outcome is known and its windows embedded."""

    source: SourceFile
    outcome: Outcome | None = None
    windows: list[Window] = field(default_factory=list)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    load: Callable[[], WindowRows] | None = None
    """Reads the window rows back from a shard when the file's turn comes, instead of ``windows`` + ``vectors``."""

    rejected: str | None = None
    """Why the model's output for this file cannot be stored (it becomes a failure)."""

    @property
    def failed(self) -> bool:
        return self.rejected is not None or (self.outcome is not None and self.outcome.kind == "failed")

    @property
    def ready(self) -> bool:
        if self.outcome is None:
            return False
        return self.failed or self.load is not None or len(self.vectors) == len(self.windows)

    def reject(self, reason: str) -> None:
        """The model gave this file's audio no usable vector: it fails, its other windows are skipped."""
        self.rejected = reason
        self.windows, self.vectors, self.load = [], {}, None

    def window_rows(self) -> WindowRows:
        if self.load is not None:
            return self.load()
        return window_rows(self.windows, np.stack([self.vectors[i] for i in range(len(self.windows))]))


COMMIT_EVERY_S = 3.0
"""Ready files wait up to this long to be committed together: reopening the catalog after letting
readers in costs ≈ 35 ms (DuckDB checkpoints on close), which per model batch was ≈ 3% of a CPU run.
A round is one vector write and one transaction (``bulk_commit``); a kill loses at most this much
finished work (and at most ``MAX_ROUND_FILES`` files)."""


class Committer:
    """Commits files in the order they were registered, each once it and all before it are ready,
    in rounds at most ``COMMIT_EVERY_S`` apart (``commit_ready(final=True)`` commits what is left).
    A round goes to the archive in one ``save_files`` call: the same archive as one file at a time."""

    def __init__(self, archive: Session, report, progress):
        self.archive = archive
        self.report = report
        self.progress = progress
        self.order: OrderedDict[int, PendingFile] = OrderedDict()
        self._last_round = time.monotonic()

    def register(self, item: PendingFile) -> None:
        self.order.setdefault(id(item), item)

    def commit_ready(self, final: bool = False) -> None:
        if not final and time.monotonic() - self._last_round < COMMIT_EVERY_S:
            return
        started, committed = time.perf_counter(), False
        while self.order and next(iter(self.order.values())).ready:
            self._commit_round()
            committed = True
        if committed:
            self._last_round = time.monotonic()
            self.report.commit_seconds += time.perf_counter() - started

    def _commit_round(self) -> None:
        """The ready prefix of the order, up to a round's size, in one ``save_files``."""
        round_: list[tuple[PendingFile, Outcome, FileWrite]] = []
        size = 0
        for item in self.order.values():
            if not item.ready or len(round_) >= MAX_ROUND_FILES or size >= MAX_ROUND_BYTES:
                break
            outcome = self._outcome(item)
            write = self._write(item, outcome)
            round_.append((item, outcome, write))
            size += write.vector_bytes
        saved = self.archive.save_files([write for _, _, write in round_])
        for (item, outcome, write), done in zip(round_, saved):
            del self.order[id(item)]
            self._report(item, outcome, write, done)

    @staticmethod
    def _outcome(item: PendingFile) -> Outcome:
        outcome = item.outcome
        if item.rejected is not None and outcome.kind != "failed":
            digest = outcome.row.content_hash if outcome.row is not None else None
            outcome = failed_outcome(item.source, digest, "invalid_vector", item.rejected)
        return outcome

    @staticmethod
    def _write(item: PendingFile, outcome: Outcome) -> FileWrite:
        src = item.source
        if outcome.kind == "touched":
            return FileWrite.touch(outcome.recording_id, src.key, src.size_bytes, src.mtime)
        if outcome.kind == "reused":
            return FileWrite.reuse(outcome.recording_id, src.key, src.size_bytes, src.mtime)
        if outcome.kind == "failed":
            return FileWrite.save(outcome.row)
        return FileWrite.save(outcome.row, item.window_rows())

    def _report(self, item: PendingFile, outcome: Outcome, write: FileWrite, saved: Saved) -> None:
        src, report = item.source, self.report
        audio_s = 0.0
        if outcome.kind == "touched":
            report.unchanged += 1
        elif outcome.kind == "reused":
            report.recording_ids.append(saved.recording_id)
            report.reused += 1
            audio_s = saved.row.duration_s or 0.0
        elif outcome.kind == "failed":
            report.recording_ids.append(saved.recording_id)
            report.failed.append(FailedFile(src.key, outcome.row.error_kind, outcome.row.error))
        else:
            report.recording_ids.append(saved.recording_id)
            report.indexed += 1
            report.windows_added += len(write.windows) if write.windows is not None else 0
            audio_s = outcome.row.duration_s or 0.0
        report.audio_seconds += audio_s
        item.windows, item.vectors, item.load = [], {}, None
        if self.progress:
            self.progress.file_done(src.path, outcome.kind, src.size_bytes, audio_s)


def window_rows(windows: list[Window], vectors: np.ndarray) -> WindowRows:
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
