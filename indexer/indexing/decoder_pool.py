"""A pool of decoding processes feeding one model, files handed out one at a time.

Each file goes to whichever decoder is free (two queued per decoder, so none waits for its next
file), at most ``lookahead`` files past the oldest one still decoding, so the vectors of files
waiting for an earlier one to be committed stay bounded. Windows of different files arrive
interleaved; the committer puts files back in the plan's order, so the archive is the same
whatever the number of decoders.

Decoded windows come back pickled through each child's stdout. Measured on 2 cores (10 s windows,
1.9 MB of float32): 0.83 ms of the model process's CPU per window through a pipe, against
1.7 ms for a fresh shared-memory block per window — and a block left in /dev/shm by a decoder
killed mid-window would outlive the run — while decoding that window costs ≈ 22 ms. So: pipes.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from indexer.indexing.decoder_process import CRASHED, IDLE, ONE_THREAD, OUTCOME, DecodeJob, DecoderCrashed, failed_outcome

IDLE_S = 0.2
"""Waiting this long for any decoder, ``messages()`` yields IDLE, so the caller can let go of shared resources."""
QUEUED_PER_DECODER = 2
STOP_WAIT_S = 2.0
"""How long a child whose output ended may take to exit before it is killed."""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def default_decoders() -> int:
    """The machine's cores minus one (the model's), at least two. Decoders run at nice 19, so they
    take only the CPU the model leaves; what a second one buys on a 2-core machine is the model's
    waits, which both cores then shorten (measured, full-size CLAP: 85% of the model alone with one
    decoder, 92% with two)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(2, cores - 1)


@dataclass(eq=False)
class _Decoder:
    """One child process, the files handed to it (oldest, the one it is on, first), and the
    thread that writes to it: the job first (large for a big archive; children start in
    parallel), then file numbers; None closes its input."""

    process: subprocess.Popen
    files: deque[int] = field(default_factory=deque)
    outbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)

    def hand(self, index: int) -> None:
        self.files.append(index)
        self.outbox.put(index)

    def close(self) -> None:
        self.outbox.put(None)


def _write_messages(decoder: _Decoder, job: DecodeJob) -> None:
    """A child that is gone takes nothing more; its end of the stream tells the pool."""
    stream = decoder.process.stdin
    try:
        pickle.dump(job, stream, protocol=pickle.HIGHEST_PROTOCOL)
        stream.flush()
        while (index := decoder.outbox.get()) is not None:
            pickle.dump(index, stream, protocol=pickle.HIGHEST_PROTOCOL)
            stream.flush()
    except (BrokenPipeError, OSError, ValueError):
        pass
    finally:
        try:
            stream.close()
        except (BrokenPipeError, OSError):
            pass


class DecoderPool:
    """Runs ``DecodeJob`` in ``decoders`` child processes; ``messages()`` yields (kind, file index,
    payload) for every file exactly once ending in OUTCOME, each file's windows in order.

    A child that dies mid-file (a decoder library crash) has that file reported failed; a new child
    takes over the files that were queued for it.
    """

    def __init__(self, job: DecodeJob, decoders: int = 1, queue_size: int = 16, lookahead: int | None = None):
        self.job = job
        self.decoders = max(1, min(int(decoders), max(1, len(job.files))))
        self.inbox: queue.Queue = queue.Queue(maxsize=max(2, queue_size, 2 * self.decoders))
        self.lookahead = lookahead or max(32, 8 * self.decoders)
        self.running: list[_Decoder] = []
        self._next = 0  # the next file to hand out
        self._open: set[int] = set()  # handed out, no outcome yet
        self._stopped = threading.Event()

    @property
    def pids(self) -> list[int]:
        return [d.process.pid for d in self.running]

    def messages(self) -> Iterator[tuple[str, int, object]]:
        files = len(self.job.files)
        if not files:
            return
        self.running = [self._start() for _ in range(self.decoders)]
        finished = 0
        self._hand_out()
        while finished < files:
            try:
                decoder, message = self.inbox.get(timeout=IDLE_S)
            except queue.Empty:
                yield IDLE, -1, None
                continue
            if message is _EOF:
                for failed in self._replace(decoder):
                    finished += 1
                    yield failed
                self._hand_out()
                continue
            kind, index, payload = message
            if kind == CRASHED:
                raise DecoderCrashed(f"A decoding process failed: {payload}")
            if kind == OUTCOME:
                decoder.files.popleft()
                self._open.discard(index)
                finished += 1
                self._hand_out()
            yield kind, index, payload

    def stop(self) -> None:
        """Children stop at once (one mid-file has nothing worth keeping); their readers let go of
        what they held for the model."""
        self._stopped.set()
        for decoder in self.running:
            decoder.close()
            if decoder.process.poll() is None:
                decoder.process.kill()
            decoder.process.wait(timeout=10)

    # --- inside -------------------------------------------------------------------------------

    def _start(self) -> _Decoder:
        env = {**os.environ, **ONE_THREAD,
               "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
        process = subprocess.Popen(
            [sys.executable, "-c", "from indexer.indexing.decoder_process import _child_main; _child_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        decoder = _Decoder(process)
        threading.Thread(target=_write_messages, args=(decoder, self.job), daemon=True).start()
        threading.Thread(target=_read_messages, args=(decoder, self.inbox, self._stopped), daemon=True).start()
        return decoder

    def _hand_out(self) -> None:
        """Queue files on free decoders, in plan order, within the lookahead."""
        oldest = min(self._open, default=self._next)
        for decoder in sorted(self.running, key=lambda d: len(d.files)):
            while (len(decoder.files) < QUEUED_PER_DECODER and self._next < len(self.job.files)
                   and self._next < oldest + self.lookahead):
                decoder.hand(self._next)
                self._open.add(self._next)
                self._next += 1

    def _replace(self, dead: _Decoder) -> Iterator[tuple[str, int, object]]:
        """A child's stream ended: the file it was on failed; its queued files go to a new child."""
        dead.close()
        try:
            code = dead.process.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:  # it closed its output yet lives on: it is of no more use
            dead.process.kill()
            code = dead.process.wait(timeout=10)
        self.running.remove(dead)
        if dead.files:
            index = dead.files.popleft()
            src = self.job.files[index]
            self._open.discard(index)
            yield OUTCOME, index, failed_outcome(
                src, None, "decoder_crash", f"{src.path.name} crashed the audio decoder (exit code {code})."
            )
        replacement = self._start()
        self.running.append(replacement)
        for index in dead.files:
            replacement.hand(index)


_EOF = object()


def _read_messages(decoder: _Decoder, inbox: queue.Queue, stopped: threading.Event) -> None:
    """Any end of the stream (EOF, a crash mid-message, garbage) reads as the child having died."""
    try:
        while _put(inbox, (decoder, pickle.load(decoder.process.stdout)), stopped):
            pass
    except Exception:  # noqa: BLE001
        pass
    _put(inbox, (decoder, _EOF), stopped)


def _put(inbox: queue.Queue, item, stopped: threading.Event) -> bool:
    """Wait for room, unless the pool has stopped (then nobody reads: drop it and end)."""
    while not stopped.is_set():
        try:
            inbox.put(item, timeout=IDLE_S)
            return True
        except queue.Full:
            continue
    return False
