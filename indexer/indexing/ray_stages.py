"""The two stages ``index --engine ray`` runs on a cluster's workers: decoding, then embedding.

Rows carry ``file`` (the file's place in the driver's plan), ``ordinal`` (the window's number in
its file; on an outcome row, how many windows came before it), ``kind`` (a window or the file's
outcome), ``payload`` (a pickle: the decoded ``Window``, after embedding the released window and
its vector, or the ``Outcome``) and ``model_s`` (seconds in the model, on one row per batch).

Decoding is the local engine's own (``decoder_process``: hashing, the touched / reused / staged
checks, the guarded decoders, windows and quality figures, in a low-priority child process that
a crashing decoder library cannot take down). Embedding runs in actors that load the model once;
the encoder always runs batches of one fixed shape, so a window's vector has the same bits
whichever other windows Ray batches it with, and in whatever order.
"""

from __future__ import annotations

import pickle
import time
from collections import Counter
from dataclasses import replace
from typing import Iterator

import numpy as np

from indexer.archive.manifest import Manifest
from indexer.config import EncoderConfig
from indexer.indexing.decoder_pool import DecoderPool
from indexer.indexing.decoder_process import IDLE, OUTCOME, WINDOW, DecodeJob
from indexer.session import load_model

ROWS_PER_OUTPUT = 8
"""Decoded windows handed on together (each ≈ 1.9 MB of samples at 10 s)."""
DECODE_QUEUE = 16

_jobs: dict[str, DecodeJob] = {}


def decode_files(batch: dict[str, np.ndarray], job) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data batch function: the files of ``batch`` decoded into window rows and outcome rows."""
    job = _resolve(job)
    files = [int(i) for i in batch["file"]]
    decoder = DecoderPool(replace(job, files=[job.files[i] for i in files]), 1, DECODE_QUEUE)
    counts: Counter[int] = Counter()
    rows: list[tuple[int, int, str, bytes]] = []
    try:
        for kind, index, payload in decoder.messages():
            if kind == IDLE:
                continue
            file = files[index]
            rows.append((file, counts[file], kind, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)))
            if kind == WINDOW:
                counts[file] += 1
            if kind == OUTCOME or len(rows) >= ROWS_PER_OUTPUT:
                yield _columns(rows, [0.0] * len(rows))
                rows = []
        if rows:
            yield _columns(rows, [0.0] * len(rows))
    finally:
        decoder.stop()


class EmbedWindows:
    """Ray Data callable class: one model per actor, loaded the way the local engine loads it."""

    def __init__(self, encoder_config: EncoderConfig, manifest: Manifest):
        self.encoder = load_model(encoder_config)
        manifest.check_model(self.encoder.identity)  # an archive never mixes two models' vectors

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kinds, payloads = list(batch["kind"]), list(batch["payload"])
        picked = [i for i, kind in enumerate(kinds) if kind == WINDOW]
        windows = [pickle.loads(payloads[i]) for i in picked]
        vectors, seconds = None, 0.0
        if windows:
            started = time.perf_counter()
            vectors = self.encoder.embed_audio([w.samples for w in windows])
            seconds = time.perf_counter() - started
        for window, vector, i in zip(windows, vectors if vectors is not None else (), picked):
            payloads[i] = pickle.dumps((window.released(), vector), protocol=pickle.HIGHEST_PROTOCOL)
        rows = list(zip(batch["file"], batch["ordinal"], kinds, payloads))
        return _columns(rows, [seconds] + [0.0] * (len(rows) - 1))


def _columns(rows, model_s) -> dict[str, np.ndarray]:
    payloads = np.empty(len(rows), dtype=object)
    payloads[:] = [r[3] for r in rows]
    return {
        "file": np.array([int(r[0]) for r in rows], np.int64),
        "ordinal": np.array([int(r[1]) for r in rows], np.int64),
        "kind": np.array([str(r[2]) for r in rows], dtype=object),
        "payload": payloads,
        "model_s": np.asarray(model_s, np.float64),
    }


def _resolve(job) -> DecodeJob:
    """The run's job, fetched from the object store once per worker process."""
    if isinstance(job, DecodeJob):
        return job
    import ray

    key = job.hex()
    if key not in _jobs:
        _jobs.clear()
        _jobs[key] = ray.get(job)
    return _jobs[key]
