"""A decoding process: hashes, decodes and windows the files it is handed, ahead of the model.

``decoder_pool`` runs several. Each is a separate process at the lowest CPU priority, not a thread: on a small machine a decoder
that competes with torch at equal priority stalls the model's parallel regions (measured on 2
cores: 6.2 windows/s alone, 2.5 beside a busy decoder at nice 0, 6.0 beside one at nice 19), and
a thread would also hold the GIL while the scheduler has parked it. (SCHED_IDLE measured no
better than nice 19 here and is Linux-only.) A process also isolates the
model from a decoder library that crashes on a hostile file: that file is recorded as failed
and decoding resumes with the next one. The child talks pickles over its stdin (the job, then
file numbers) and stdout (windows and outcomes), never through ``multiprocessing``, which would
re-import the caller's ``__main__`` (breaking scripts fed on stdin and re-running unguarded ones).
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from dataclasses import dataclass
from typing import Iterator, Sequence

from indexer.archive.records import KnownFile, RecordingRow
from indexer.audio import decode as audio
from indexer.audio.sources import SourceFile, content_hash
from indexer.audio.windows import QualityAccumulator, cut_windows
from indexer.config import DecodeOptions, WindowConfig
from indexer.errors import AudioError, EmptyAudioError, SoundtraceError

NICENESS = 19
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
"""The child's numpy runs its BLAS on one thread: a second BLAS thread spinning beside the model
burned about as much CPU again as the decoding itself (a 60 s stereo FLAC: 175 -> 92 CPU-ms)."""


@dataclass(frozen=True)
class Outcome:
    """How one file ended: "indexed" (its windows came before), "failed", "touched", "reused" or
    "staged" (a shard of an interrupted run holds its windows; ``row`` carries its content hash)."""

    kind: str
    row: RecordingRow | None = None
    recording_id: int | None = None  # the row to touch, or the recording whose windows are reused


@dataclass(frozen=True)
class DecodeJob:
    files: Sequence[SourceFile]
    known: dict[str, KnownFile]
    hashes: dict[str, int]
    windows: WindowConfig
    decode: DecodeOptions
    staged: frozenset[str] = frozenset()
    """Content hashes whose windows a shard already holds: not decoded again."""


WINDOW, OUTCOME, CRASHED, IDLE = "window", "outcome", "crashed", "idle"


class DecoderCrashed(SoundtraceError):
    """A decoding process failed in a way that is not about one file."""


# --- the child ---------------------------------------------------------------------------------


def _child_main() -> None:
    """Reads the job, then file numbers one at a time (None or EOF: stop), and answers each with
    its windows and, last, its outcome."""
    _yield_cpu_to_the_model()
    inbox = sys.stdin.buffer
    job = pickle.load(inbox)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the message stream

    def send(message) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    try:
        while (index := _next_file(inbox)) is not None:
            for kind, payload in _decode_one(job, job.files[index]):
                send((kind, index, payload))
    except BrokenPipeError:  # the indexer is gone (kill -9): nothing left to do
        os._exit(0)
    except BaseException:  # noqa: BLE001 — reported to the parent, which stops the run
        send((CRASHED, -1, traceback.format_exc(limit=5)))


def _next_file(inbox) -> int | None:
    try:
        return pickle.load(inbox)
    except EOFError:  # the indexer closed our input or died
        return None


def _yield_cpu_to_the_model() -> None:
    """The lowest priority: the model keeps its cores; we decode on what it leaves over."""
    try:
        os.nice(NICENESS)
    except OSError:
        pass


def _decode_one(job: DecodeJob, src: SourceFile) -> Iterator[tuple[str, object]]:
    if src.problem is not None:
        yield OUTCOME, failed_outcome(src, None, src.problem.kind, src.problem.reason)
        return
    try:
        digest = content_hash(src.path)
    except OSError as exc:
        yield OUTCOME, failed_outcome(src, None, "unreadable", f"{src.path.name} cannot be read: {exc.strerror or exc}.")
        return
    known = job.known.get(src.key)
    if known is not None and known.content_hash == digest and known.status == "indexed":
        yield OUTCOME, Outcome("touched", recording_id=known.recording_id)
        return
    if digest in job.hashes:
        yield OUTCOME, Outcome("reused", recording_id=job.hashes[digest])
        return
    if digest in job.staged:
        row = RecordingRow(path=src.key, content_hash=digest, size_bytes=src.size_bytes, mtime=src.mtime, status="indexed")
        yield OUTCOME, Outcome("staged", row=row)
        return
    count, end = 0, 0.0
    try:
        info, blocks = audio.stream(src.path, job.decode)
        quality = QualityAccumulator()
        for window in cut_windows(blocks, job.windows):
            quality.add_window(window)
            count, end = count + 1, max(end, window.end_s)
            yield WINDOW, window
        result = quality.result()  # a silent recording is indexed and flagged is_silent: a finding, not an error
        if count == 0:
            raise EmptyAudioError(f"{src.path.name} holds no audio to embed.")
    except AudioError as exc:
        yield OUTCOME, failed_outcome(src, digest, _kind(exc), str(exc))
        return
    except Exception as exc:  # a decoder bug must not stop the run: record it and go on
        yield OUTCOME, failed_outcome(src, digest, "internal", f"{src.path.name} could not be decoded ({type(exc).__name__}: {exc}).")
        return
    row = RecordingRow(
        path=src.key, content_hash=digest, size_bytes=src.size_bytes, mtime=src.mtime,
        status="indexed", duration_s=max(end, info.duration_s or 0.0),
        sample_rate=info.sample_rate, channels=info.channels, format=info.format, decoder=info.decoder,
        peak=result.peak, rms_db=result.rms_db, clipped_fraction=result.clipped_fraction,
        silent_fraction=result.silent_fraction, is_silent=result.is_silent, is_clipped=result.is_clipped,
    )
    yield OUTCOME, Outcome("indexed", row=row)


def failed_outcome(src: SourceFile, digest: str | None, kind: str, message: str) -> Outcome:
    row = RecordingRow(
        path=src.key, content_hash=digest, size_bytes=src.size_bytes, mtime=src.mtime,
        status="failed", error_kind=kind, error=message,
    )
    return Outcome("failed", row=row)


def _kind(exc: AudioError) -> str:
    """EmptyAudioError -> "empty_audio": a stable, filterable name for each failure kind."""
    name = type(exc).__name__.removesuffix("Error")
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


