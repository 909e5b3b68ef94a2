"""Audit arithmetic on arrays: every window against every label, reduced per recording.

Pure numpy, no I/O, so it is tested exactly and benchmarked on synthetic vectors.

Rules (documented for users in data/labelsets/README.md):

- Exclusions ("but not"): a window's score for a label is lowered by how much more it resembles
  an excluded concept: adjusted = cos(label) − max(0, max over exclusions of cos(excluded) − cos(label)).
- Probabilities: softmax over the label set of CLAP's logit scale × adjusted score, per window.
  Confidence of a label in a window: p / (p + p_strongest_rival) (0.5 is a coin toss).
- A window is flagged for a label when its adjusted score reaches the label's cutoff (its
  threshold, and the set's min_score), its confidence reaches min_confidence, and — in exclusive
  mode — the label wins the window. A "top x%" threshold becomes the score cutoff that puts a
  recording's best score among the top x% of all audited recordings for that label.
- Per recording and label: the best adjusted score and where it is, flagged windows and flagged
  seconds (each window counts at most one hop, so overlapping windows are not counted twice),
  the percentile of the best score among all audited recordings, and whether it is the
  recording's best label.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from indexer.audit.labelset import LabelSet, Threshold


@dataclass(frozen=True)
class LabelVectors:
    """The label set in vector form: one unit vector per label, plus the excluded concepts."""

    vectors: np.ndarray  # (L, d)
    exclusions: np.ndarray  # (E, d)
    excluded_by: tuple[tuple[int, ...], ...]  # per label: rows of ``exclusions``


@dataclass(frozen=True)
class WindowTable:
    """Per window, aligned with the rows of the vector matrix; a recording's windows are contiguous."""

    ids: np.ndarray
    recording: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    channel: np.ndarray


@dataclass(frozen=True)
class AuditScores:
    """(recordings, labels) arrays, recordings in first-appearance order."""

    labels: tuple[str, ...]
    recording_ids: np.ndarray
    score: np.ndarray
    probability: np.ndarray
    confidence: np.ndarray
    percentile: np.ndarray
    best_window: np.ndarray
    best_start_s: np.ndarray
    best_end_s: np.ndarray
    channel: np.ndarray
    flagged_windows: np.ndarray
    flagged_seconds: np.ndarray
    flagged: np.ndarray
    is_best: np.ndarray
    cutoffs: np.ndarray  # the score cutoff each label ended up with
    windows_scored: int
    learned_versions: dict = field(default_factory=dict)  # learned label name -> the version scored
    learned_thresholds: dict = field(default_factory=dict)  # learned label name -> its scorer's boundary, where used
    product: str = "cpu"  # where the similarities were computed: "cpu" (numpy) or "cuda"


def adjusted_scores(similarity: np.ndarray, n_labels: int, excluded_by: Sequence[Sequence[int]]) -> np.ndarray:
    """Label rows of label-major ``similarity`` (columns are windows) after the exclusion rule;
    exclusion rows follow the labels. Without exclusions, the label rows themselves (no copy)."""
    if not any(excluded_by):
        return similarity[:n_labels]
    scores = np.array(similarity[:n_labels], dtype=np.float32, copy=True)
    for label, rows in enumerate(excluded_by):
        if rows:
            excluded = similarity[[n_labels + r for r in rows]].max(axis=0)
            scores[label] -= np.maximum(0.0, excluded - scores[label])
    return scores


def softmax_columns(logits: np.ndarray) -> np.ndarray:
    """Softmax over the labels (rows) of each window (column). The labels are summed in order,
    row by row, so a window's probabilities do not depend on how many others share the array
    (numpy's ``sum(axis=0)`` of a single column sums pairwise, in another order)."""
    z = logits - logits.max(axis=0)
    np.exp(z, out=z)
    total = z[0].copy()
    for row in z[1:]:
        total += row
    z /= total
    return z


@dataclass(frozen=True)
class Rivals:
    """Per window, the largest probability and the strongest rival of whichever label holds it."""

    top: np.ndarray
    second: np.ndarray  # equals ``top`` when two labels share the top

    @classmethod
    def of(cls, p: np.ndarray) -> Rivals:
        top = p.max(axis=0)
        at_top = p == top
        below_top = np.where(at_top, -np.inf, p).max(axis=0)
        return cls(top, np.where(at_top.sum(axis=0) > 1, top, below_top))

    def confidence(self, p: np.ndarray, cols: np.ndarray | slice = slice(None)) -> np.ndarray:
        """p / (p + strongest other label's p) for label-major ``p`` over windows ``cols``; 1 for a lone label."""
        if len(p) == 1:
            return np.ones_like(p)
        top, second = self.top[cols], self.second[cols]
        rival = np.where(p >= top, second, top)
        return p / np.maximum(p + rival, 1e-12)


SCAN_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
"""Threads for the per-window arithmetic: blocks are independent, numpy's steps run without the GIL."""
CHUNK_ROWS = 16384
"""Windows per block of the per-window arithmetic (whole recordings, so a long one makes a longer
block): its (labels, windows) temporaries stay in cache instead of making full-size passes over memory."""


def score_archive(
    matrix: np.ndarray, windows: WindowTable, labels: LabelVectors, labelset: LabelSet, logit_scale: float, hop_s: float,
    product: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> AuditScores:
    """``product(matrix, queries)`` computes ``queries @ matrix.T`` elsewhere (a GPU); numpy by default."""
    queries = label_queries(labels)
    # one BLAS call for the whole matrix: blocked calls can round rows differently
    similarity = product(matrix, queries) if product is not None else queries @ matrix.T  # (queries, windows)
    return score_similarity(similarity, windows, labels, labelset, logit_scale, hop_s)


def label_queries(labels: LabelVectors) -> np.ndarray:
    """The rows a similarity matrix is computed for: the labels, then the excluded concepts."""
    return np.concatenate([labels.vectors, labels.exclusions]).astype(np.float32)


def score_similarity(
    similarity: np.ndarray, windows: WindowTable, labels: LabelVectors, labelset: LabelSet, logit_scale: float, hop_s: float,
    peers_best: np.ndarray | None = None,
) -> AuditScores:
    """The audit from ``label_queries(labels) @ vectors.T`` (one column per window of ``windows``).

    ``peers_best`` (labels x recordings): the best scores of recordings of the same audit not
    scored here (a standing audit's earlier ones); "top x%" cutoffs are taken over them and these
    together, as a run over all of them would. Percentiles are over the recordings scored here.

    The per-window arithmetic is label-major (labels x windows), so every per-label step runs
    along contiguous memory and every step across labels is an elementwise pass over a few rows.
    Every per-window and per-recording figure depends only on that recording's windows (never on
    which others are scored with it), so a recording scored alone gets the bits a full run gives it.
    """
    names = tuple(label.name for label in labelset.labels)
    n_labels = len(names)
    n = similarity.shape[1]
    has_exclusions = any(labels.excluded_by)
    scores = np.empty((n_labels, n), np.float32) if has_exclusions else similarity[:n_labels]
    starts = _runs(windows.recording)
    recording_ids = windows.recording[starts]
    seconds = np.minimum(windows.end_s - windows.start_s, hop_s).astype(np.float64)
    min_confidence = labelset.min_confidence or 0.0
    exclusive = labelset.mode == "exclusive"
    eligible = np.ones((n_labels, n), bool) if (exclusive or min_confidence > 0) else None

    def first_pass(lo: int, hi: int, run_lo: int, run_hi: int) -> tuple[np.ndarray, ...]:
        """Scores, each recording's best and where, and which windows could be flagged once the
        cutoffs are known (confidence, and in exclusive mode the window's winner)."""
        local = starts[run_lo:run_hi] - lo
        block = adjusted_scores(similarity[:, lo:hi], n_labels, labels.excluded_by)
        if has_exclusions:
            scores[:, lo:hi] = block
        block_best = np.maximum.reduceat(block, local, axis=1)
        if np.isnan(block_best).any():
            raise ValueError("some window vectors contain NaN, so they cannot be scored")
        pos = _first_argmax_per_run(block, block_best, local)
        if min_confidence > 0:  # every window's confidence decides its flags
            probs = softmax_columns(logit_scale * block)
            rivals = Rivals.of(probs)
            np.greater_equal(rivals.confidence(probs), min_confidence, out=eligible[:, lo:hi])
            at = pos
        else:  # only the best windows' probabilities are reported: computed for those alone (a
            # window's probabilities depend on its own column only, so the bits are the same)
            columns, at = np.unique(pos, return_inverse=True)
            at = at.reshape(pos.shape)
            probs = softmax_columns(logit_scale * block[:, columns])
            rivals = Rivals.of(probs)
        if exclusive:  # one winner per window (ties: the label listed first)
            eligible[:, lo:hi] &= _first_winner(block)
        at_best = np.take_along_axis(probs, at, axis=1)
        return block_best, pos + lo, at_best, rivals.confidence(at_best, at)

    def second_pass(lo: int, hi: int, run_lo: int, run_hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Flags against the cutoffs (a "top x%" cutoff needs every recording's best first)."""
        local = starts[run_lo:run_hi] - lo
        flags = scores[:, lo:hi] >= cutoffs[:, None]
        if eligible is not None:
            flags &= eligible[:, lo:hi]
        return np.add.reduceat(flags, local, axis=1, dtype=np.int32), np.add.reduceat(flags * seconds[lo:hi], local, axis=1)

    blocks = _blocks(starts, n)
    none = np.empty((n_labels, 0), np.float32)  # each part starts empty-shaped, for an archive without windows
    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:  # numpy lets go of the GIL inside each step
        first = [(none, none.astype(np.int64), none, none), *pool.map(lambda b: first_pass(*b), blocks)]
        best, best_pos, probability, confidence = (np.concatenate(part, axis=1) for part in zip(*first))
        cutoffs = label_cutoffs(best if peers_best is None else np.concatenate([best, peers_best], axis=1), labelset)
        second = [(none.astype(np.int32), none.astype(np.float64)), *pool.map(lambda b: second_pass(*b), blocks)]
        flagged_windows, flagged_seconds = (np.concatenate(part, axis=1).T for part in zip(*second))
        percentile = _percentiles(best, pool)

    best_pos, best = best_pos.T, best.T
    take = lambda column: column[best_pos]  # (R, L) gather of a per-window column
    return AuditScores(
        labels=names,
        recording_ids=recording_ids,
        score=best,
        probability=probability.T,
        confidence=confidence.T,
        percentile=percentile,
        best_window=take(windows.ids),
        best_start_s=take(windows.start_s),
        best_end_s=take(windows.end_s),
        channel=take(windows.channel),
        flagged_windows=flagged_windows,
        flagged_seconds=flagged_seconds,
        flagged=flagged_windows > 0,
        is_best=_first_best(best),
        cutoffs=cutoffs,
        windows_scored=int(n),
    )


def _first_best(best: np.ndarray) -> np.ndarray:
    """(recordings, labels) mask of each recording's best label, the first listed on a tie."""
    mask = np.zeros(best.shape, bool)
    if best.size:
        mask[np.arange(best.shape[0]), best.argmax(axis=1)] = True
    return mask


def _first_winner(scores: np.ndarray) -> np.ndarray:
    """Label-major mask of each window's highest-scoring label, the first listed on a tie."""
    top = scores.max(axis=0)
    winner = np.empty(scores.shape, bool)
    taken = np.zeros(scores.shape[1], bool)
    for label, row in enumerate(scores):
        np.equal(row, top, out=winner[label])
        winner[label] &= ~taken
        taken |= winner[label]
    return winner


def _blocks(starts: np.ndarray, n_rows: int) -> list[tuple[int, int, int, int]]:
    """(first row, end row, first run, end run) of blocks of about CHUNK_ROWS rows made of whole runs."""
    if len(starts) == 0:
        return []
    firsts = np.unique(np.searchsorted(starts, np.arange(0, n_rows, CHUNK_ROWS)))
    firsts = firsts[firsts < len(starts)].tolist() + [len(starts)]
    bounds = starts.tolist() + [n_rows]
    return [(bounds[a], bounds[b], a, b) for a, b in zip(firsts, firsts[1:])]


def _runs(recording: np.ndarray) -> np.ndarray:
    """Start row of each recording's contiguous block of windows."""
    if len(recording) == 0:
        return np.empty(0, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(recording) != 0) + 1])
    ids = recording[starts]
    if not (ids[1:] > ids[:-1]).all():  # rising ids cannot repeat; others are sorted to look for a repeat
        ids = np.sort(ids)
        if (ids[1:] == ids[:-1]).any():
            raise ValueError("each recording's windows must be contiguous in the scanned matrix")
    return starts


def _first_argmax_per_run(scores: np.ndarray, best: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Window of the first reaching each run's maximum, per label: (L, R) block-local indices."""
    if len(starts) == 0:
        return np.empty((scores.shape[0], 0), np.int64)
    n = scores.shape[1]
    at_best = scores == np.repeat(best, np.diff(np.append(starts, n)), axis=1)
    rows_left = np.where(at_best, np.arange(n, 0, -1, dtype=np.int32), np.int32(0))  # the first at its best has the most left
    return n - np.maximum.reduceat(rows_left, starts, axis=1).astype(np.int64)


def label_cutoffs(best: np.ndarray, labelset: LabelSet) -> np.ndarray:
    """Each label's score cutoff; ``best`` is label-major (labels x recordings). Depends only on
    each label's multiset of best scores, so the recordings may come in any order."""
    cutoffs = np.empty(len(labelset.labels), np.float32)
    for i, label in enumerate(labelset.labels):
        cutoffs[i] = label_cutoff(best[i], labelset.threshold_for(label))
        if labelset.min_score is not None:
            cutoffs[i] = max(cutoffs[i], labelset.min_score)
    return cutoffs


def label_cutoff(best: np.ndarray, threshold: Threshold) -> float:
    """One label's own cutoff, before the set's min_score: its cosine threshold, or for "top x%"
    the k-th highest of the recordings' best scores, k = ceil(n · x%) (inf when there are none)."""
    if threshold.kind != "top_percent":
        return threshold.value
    if not len(best):
        return np.inf
    keep = max(1, int(np.ceil(len(best) * threshold.value / 100)))
    return float(np.sort(best)[len(best) - keep])


def percentiles(best: np.ndarray) -> np.ndarray:
    """(recordings, labels) percentiles of label-major ``best``: the arithmetic of a run."""
    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
        return _percentiles(best, pool)


def _percentiles(best: np.ndarray, pool: ThreadPoolExecutor) -> np.ndarray:
    """Share (0–100) of recordings whose best score for the label is at or below this one.

    ``best`` is label-major; labels are ranked in parallel on ``pool``."""
    out = np.empty(best.shape, np.float64)
    n = best.shape[1]

    def rank(label: int) -> None:
        values = best[label]
        order = np.argsort(values)  # searching the sorted values in order is cache-friendly; at random it is not
        column = values[order]
        out[label, order] = 100.0 * np.searchsorted(column, column, side="right") / max(n, 1)

    list(pool.map(rank, range(best.shape[0])))
    return out.T
