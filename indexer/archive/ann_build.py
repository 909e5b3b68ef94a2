"""Building the ANN index, and choosing its parameters by the recall they measure.

Sizes follow the FAISS guidelines (and autofaiss): about 4·√N inverted lists, trained by k-means
on 16 points per list. Training costs points × lists: at 64 per list, 10M windows and 16,384
lists would take most of an hour on two cores; measured at 1M windows, 16 per list trains in 14 s
and finds 0.97 of text queries' top 50 at 16 probes. (Two-level k-means, √nlist times cheaper
again, was tried and dropped: its cells put text queries' neighbours past the 1,000th probe.)

Codes are 4-bit fast-scan PQ with one sub-quantizer per 2 dimensions (128 bytes per window at
512 dimensions): measured at 1M windows with text queries, which sit in the middle of a diffuse
cloud of windows rather than beside one, one per 4 dimensions peaked at recall 0.96 with 12,800
candidates; one per 2 reached 1.0 with 6,400.

The lists probed and candidates re-scored are the cheapest pair whose recall against the exact
scan, on sample queries (remembered label texts and stored windows), reaches the target; an index
that reaches it nowhere is kept but not used (``VectorStore.ann_trusted``). New windows are
appended without retraining; the index is retrained when the archive has grown fourfold since
training or recall can no longer be reached.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from indexer.archive.ann import LEGACY_RECORD, AnnEntry, AnnIndex, AnnRecord
from indexer.archive.durable import replace_atomically
from indexer.archive.segments import SEGMENTS_DIR
from indexer.archive.vector_store import StoreConfig, VectorStore

SAMPLE_QUERIES = 100
CANDIDATE_STEPS = (200, 400, 800, 1600, 3200, 6400)
"""Candidates re-scored per query, tried in turn."""
RECALL_DEPTH = 50
"""Recall is measured on the top 50 windows, not the top 10: a search for the 10 best recordings
reads that deep, because a recording's windows come in runs of near-equal scores (measured at 1M
clustered windows: parameters giving 0.97 on the top 10 windows gave 0.90 on the top 10 recordings)."""
ADD_BLOCK = 65_536
TRAIN_POINTS_PER_LIST = 16
Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    pass


def lists_for(windows: int) -> int:
    """Inverted lists for ``windows`` vectors: a power of two near 4·√N, with ≥ 39 training points each."""
    target = 4 * math.sqrt(max(windows, 1))
    nlist = 2 ** round(math.log2(max(target, 1)))
    return int(max(16, min(nlist, 65_536, 2 ** int(math.log2(max(windows // 39, 16))))))


def sample_queries(store: VectorStore, remembered: np.ndarray, count: int = SAMPLE_QUERIES, seed: int = 0) -> np.ndarray:
    """Queries to measure recall with: remembered label texts first, then stored windows at random."""
    rng = np.random.default_rng(seed)
    ids = store.ids()
    take = max(0, count - len(remembered))
    picked = np.sort(rng.choice(ids, size=min(take, len(ids)), replace=False)) if take else np.empty(0, np.int64)
    parts = [np.asarray(remembered, np.float32).reshape(-1, store.dim)[:count], store.vectors(picked)]
    return np.concatenate(parts)


def plan(store: VectorStore, config: StoreConfig) -> str:
    """What the archive's size asks of the ANN index: 'none', 'drop', 'keep', 'extend' or 'build'."""
    live = len(store)
    if live < config.ann_min_windows:
        return "drop" if store.ann is not None or store.ann_damage else "none"
    if store.ann is None:
        return "build"
    record = store.ann.record
    tail = store.end_id - record.covers_below
    if len(store.dead) >= 0.2 * max(live, 1) or live >= 4 * record.windows:
        return "build"  # many deletions, or grown fourfold: too few lists for the size
    if tail <= max(1_000, live // 20):
        return "keep"  # the tail is scanned exactly; not worth a rewrite yet
    return "extend"


def maintain(directory: Path, step: str, store: VectorStore, remembered: np.ndarray, config: StoreConfig,
             progress: Progress = no_progress) -> AnnEntry | None:
    """After an indexing run: do what ``plan`` said. Returns the catalog entry of the index now in
    force, its file written (None: exact search); the caller swaps it in."""
    folder = Path(directory) / SEGMENTS_DIR
    if step in ("none", "drop"):
        return None
    if step == "keep":
        return AnnEntry.of_file(store.ann.record, folder / store.ann.record.file)
    if step == "extend":
        extended = _extend(folder, store, remembered, config, progress)
        if extended is not None:
            return extended
    return build(folder, store, remembered, config, progress)


def build(folder: Path, store: VectorStore, remembered: np.ndarray, config: StoreConfig,
          progress: Progress = no_progress) -> AnnEntry:
    """Train a new index on a sample of the stored vectors, add every live window, choose nprobe."""
    started = time.perf_counter()
    live = len(store)
    nlist = lists_for(live)
    m = _subquantizers(store.dim)
    factory = f"IVF{nlist}_HNSW32,PQ{m}x4fs"
    index = faiss.index_factory(store.dim, factory, faiss.METRIC_INNER_PRODUCT)
    ids = store.ids()
    rng = np.random.default_rng(0)
    train_ids = np.sort(rng.choice(ids, size=min(len(ids), TRAIN_POINTS_PER_LIST * nlist), replace=False))
    progress("training the ANN index", 0, 1)
    _train(index, store.vectors(train_ids))
    _add(index, store, 0, progress)
    record = AnnRecord(
        file="", factory=factory, nlist=nlist, nprobe=1, candidates=CANDIDATE_STEPS[0], covers_below=store.end_id,
        windows=live, trained_on=len(train_ids), recall=0.0, recall_depth=RECALL_DEPTH, p50_ms=0.0, p95_ms=0.0, queries=0,
        built_at="", seconds=0.0,
    )
    return _choose_and_save(folder, index, record, store, remembered, config, started, progress)


def _train(index: faiss.Index, sample: np.ndarray) -> None:
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.min_points_per_centroid = TRAIN_POINTS_PER_LIST  # below FAISS's 39, on purpose (see above)
    index.train(sample)


def _extend(folder: Path, store: VectorStore, remembered: np.ndarray, config: StoreConfig,
            progress: Progress) -> AnnEntry | None:
    """Add the windows past the index to a copy of it (no retraining); None when recall drops
    below the target at any nprobe up to a quarter of the lists (the data drifted: retrain), or
    when FAISS cannot read the file (damaged since the archive was opened: build anew)."""
    started = time.perf_counter()
    record = store.ann.record
    try:
        index = faiss.read_index(str(folder / record.file))  # a private, writable copy
    except Exception:  # noqa: BLE001 - FAISS's RuntimeError: the new build replaces the file
        return None
    _add(index, store, record.covers_below, progress)
    record = replace(record, covers_below=store.end_id, windows=len(store))
    return _choose_and_save(folder, index, record, store, remembered, config, started, progress, give_up_above=record.nlist // 4)


def _add(index: faiss.Index, store: VectorStore, from_id: int, progress: Progress) -> None:
    total = max(store.end_id - from_id, 1)
    for ids, rows in store.blocks(ADD_BLOCK):
        keep = ids >= from_id
        if keep.any():
            index.add_with_ids(np.asarray(rows[keep], np.float32), ids[keep])
            progress("adding windows to the ANN index", int(ids[-1]) - from_id, total)


def _choose_and_save(folder: Path, index: faiss.Index, record: AnnRecord, store: VectorStore, remembered: np.ndarray,
                     config: StoreConfig, started: float, progress: Progress, give_up_above: int | None = None) -> AnnEntry | None:
    queries = sample_queries(store, remembered)
    truth = store.search(queries, RECALL_DEPTH, exact=True)
    candidate = AnnIndex(index, record)
    ceiling = max(1, record.nlist // 4) if give_up_above is None else max(give_up_above, record.nprobe)
    chosen, best = None, (0.0, record.nlist, CANDIDATE_STEPS[-1])
    for count in CANDIDATE_STEPS:  # PQ's error is what candidates make up for; probing more lists
        probe = 1  # finds neighbours in other cells: the first pair reaching the target is the cheapest
        while probe <= ceiling:
            progress("measuring ANN recall", probe, record.nlist)
            recall = _recall(store, candidate, queries, truth, probe, count)
            best = max(best, (recall, probe, count))
            if recall >= config.target_recall:
                chosen = (probe, count, recall)
                break
            probe *= 2
        if chosen is not None:
            break
    if chosen is None:
        if give_up_above is not None:
            return None
        recall, probe, count = best
        chosen = (probe, count, recall)
    nprobe, count, recall = chosen
    record = replace(record, nprobe=nprobe, candidates=count, recall=round(float(recall), 4), recall_depth=truth[1].shape[1],
                     queries=len(queries))
    latencies = _latencies(store, AnnIndex(index, record), queries)
    name = f"ann-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}.faiss"
    replace_atomically(folder / name, lambda tmp: faiss.write_index(index, str(tmp)))
    record = replace(
        record, file=name, p50_ms=round(float(np.percentile(latencies, 50)), 2),
        p95_ms=round(float(np.percentile(latencies, 95)), 2),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 1),
    )
    return AnnEntry.of_file(record, folder / name)


def _recall(store: VectorStore, ann: AnnIndex, queries: np.ndarray, truth: tuple[np.ndarray, np.ndarray],
            nprobe: int, count: int) -> float:
    """Share of the exact top-k found, counting ties as ann-benchmarks does: a window scoring at
    least the k-th exact score is a right answer (among equal scores the exact scan's pick by id
    is arbitrary, and near-duplicate windows are common: a recording's windows come in runs)."""
    hits = 0
    for query, scores in zip(queries, truth[0]):
        ids = store.stored(ann.candidates(query, len(scores), None, nprobe=nprobe, count=count))
        found = store.rescore(query, ids, len(scores))[0]
        hits += int((found >= scores[-1]).sum())
    return hits / max(truth[0].size, 1)


def _latencies(store: VectorStore, ann: AnnIndex, queries: np.ndarray) -> np.ndarray:
    times = []
    for query in queries:
        start = time.perf_counter()
        store.rescore(query, ann.candidates(query, RECALL_DEPTH, None), RECALL_DEPTH)
        times.append((time.perf_counter() - start) * 1000)
    return np.asarray(times)


def _subquantizers(dim: int) -> int:
    for m in (dim // 2, dim // 4, dim):
        if m >= 1 and dim % m == 0 and m % 2 == 0:
            return m
    return dim


def tidy(directory: Path, keep: str | None) -> None:
    """Remove index files the catalog no longer names (a reader that has one open keeps its copy),
    and the record archives before catalog migration 012 kept beside them."""
    folder = Path(directory) / SEGMENTS_DIR
    (folder / LEGACY_RECORD).unlink(missing_ok=True)
    for path in folder.glob("ann-*.faiss*"):
        if path.name != keep:
            path.unlink(missing_ok=True)
