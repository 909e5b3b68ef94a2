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

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .labelset import LabelSet


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


def adjusted_scores(similarity: np.ndarray, n_labels: int, excluded_by: Sequence[Sequence[int]]) -> np.ndarray:
    """Label columns of ``similarity`` after the exclusion rule; exclusion columns follow the labels."""
    scores = np.array(similarity[:, :n_labels], dtype=np.float32, copy=True)
    for label, rows in enumerate(excluded_by):
        if rows:
            excluded = similarity[:, [n_labels + r for r in rows]].max(axis=1)
            scores[:, label] -= np.maximum(0.0, excluded - scores[:, label])
    return scores


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def rival_confidence(p: np.ndarray) -> np.ndarray:
    """p / (p + strongest other label's p), per row and label."""
    if p.shape[1] == 1:
        return np.ones_like(p)
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    rival = np.where(p >= top2[:, :1], top2[:, 1:2], top2[:, :1])
    return p / np.maximum(p + rival, 1e-12)


def score_archive(
    matrix: np.ndarray, windows: WindowTable, labels: LabelVectors, labelset: LabelSet, logit_scale: float, hop_s: float
) -> AuditScores:
    names = tuple(label.name for label in labelset.labels)
    n_labels = len(names)
    queries = np.concatenate([labels.vectors, labels.exclusions]).astype(np.float32)
    scores = adjusted_scores(matrix @ queries.T, n_labels, labels.excluded_by)
    probs = softmax_rows(logit_scale * scores)
    confidence = rival_confidence(probs)

    starts = _runs(windows.recording)
    recording_ids = windows.recording[starts]
    best = np.maximum.reduceat(scores, starts, axis=0) if len(starts) else np.empty((0, n_labels), np.float32)
    best_pos = _first_argmax_per_run(scores, best, starts)
    cutoffs = _cutoffs(best, labelset)

    flags = (scores >= cutoffs) & (confidence >= (labelset.min_confidence or 0.0))
    if labelset.mode == "exclusive":  # one winner per window (ties: the label listed first)
        flags &= np.arange(n_labels) == scores.argmax(axis=1)[:, None]
    seconds = np.minimum(windows.end_s - windows.start_s, hop_s).astype(np.float64)
    flagged_windows = np.add.reduceat(flags.astype(np.int32), starts, axis=0) if len(starts) else np.zeros_like(best, np.int32)
    flagged_seconds = (
        np.add.reduceat(flags * seconds[:, None], starts, axis=0) if len(starts) else np.zeros_like(best, np.float64)
    )
    take = lambda column: column[best_pos]  # noqa: E731 — (R, L) gather of a per-window column
    return AuditScores(
        labels=names,
        recording_ids=recording_ids,
        score=best,
        probability=np.take_along_axis(probs, best_pos, axis=0) if len(starts) else best.copy(),
        confidence=np.take_along_axis(confidence, best_pos, axis=0) if len(starts) else best.copy(),
        percentile=_percentiles(best),
        best_window=take(windows.ids),
        best_start_s=take(windows.start_s),
        best_end_s=take(windows.end_s),
        channel=take(windows.channel),
        flagged_windows=flagged_windows,
        flagged_seconds=flagged_seconds,
        flagged=flagged_windows > 0,
        is_best=best == best.max(axis=1, keepdims=True) if len(starts) else np.zeros_like(best, bool),
        cutoffs=cutoffs,
        windows_scored=int(matrix.shape[0]),
    )


def _runs(recording: np.ndarray) -> np.ndarray:
    """Start row of each recording's contiguous block of windows."""
    if len(recording) == 0:
        return np.empty(0, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(recording) != 0) + 1])
    if len(starts) != len(np.unique(recording)):
        raise ValueError("each recording's windows must be contiguous in the scanned matrix")
    return starts


def _first_argmax_per_run(scores: np.ndarray, best: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Row of the first window reaching each run's maximum, per label: (R, L) row indices."""
    if len(starts) == 0:
        return np.empty((0, scores.shape[1]), np.int64)
    run_of_row = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(scores))))
    positions = np.empty(best.shape, np.int64)
    for label in range(scores.shape[1]):
        rows = np.flatnonzero(scores[:, label] == best[run_of_row, label])
        _, first = np.unique(run_of_row[rows], return_index=True)
        positions[:, label] = rows[first]
    return positions


def _cutoffs(best: np.ndarray, labelset: LabelSet) -> np.ndarray:
    cutoffs = np.empty(len(labelset.labels), np.float32)
    for i, label in enumerate(labelset.labels):
        threshold = labelset.threshold_for(label)
        if threshold.kind == "top_percent":
            column = np.sort(best[:, i])[::-1]
            keep = max(1, int(np.ceil(len(column) * threshold.value / 100))) if len(column) else 0
            cutoffs[i] = column[keep - 1] if keep else np.inf
        else:
            cutoffs[i] = threshold.value
        if labelset.min_score is not None:
            cutoffs[i] = max(cutoffs[i], labelset.min_score)
    return cutoffs


def _percentiles(best: np.ndarray) -> np.ndarray:
    """Share (0–100) of recordings whose best score for the label is at or below this one."""
    out = np.empty(best.shape, np.float64)
    n = best.shape[0]
    for label in range(best.shape[1]):
        column = np.sort(best[:, label])
        out[:, label] = 100.0 * np.searchsorted(column, best[:, label], side="right") / max(n, 1)
    return out
