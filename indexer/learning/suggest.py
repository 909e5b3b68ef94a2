"""What to mark next: unmarked windows where a mark teaches the scorer most.

Half are the highest-scoring (confirming or refuting what it would show first), half the ones it
is least sure of (nearest its decision boundary; for a label not yet learned, nearest the top 1%
of the archive, where an audit's default share would draw the line). One window per recording,
so a long recording full of the event does not take every slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from indexer.errors import MarkError
from indexer.learning.fit import text_scorer
from indexer.learning.learned import newest_learned
from indexer.learning.marks import clean_label, marked_windows
from indexer.session import Session

UNSURE_SHARE_WITHOUT_BOUNDARY = 0.01


@dataclass(frozen=True)
class Suggestion:
    window_id: int
    recording_id: int
    path: str
    channel: int
    start_s: float
    end_s: float
    score: float
    """Cosine to the label's query direction (what search ranks by)."""
    reason: str
    """"top" (among the best-scoring) or "unsure" (nearest the scorer's boundary)."""


def suggest_windows(archive: Session, name: str, k: int = 20) -> list[Suggestion]:
    if k < 1:
        raise MarkError("Ask for at least one suggestion.")
    label, _ = clean_label(name)
    try:
        scorer = newest_learned(archive, label).scorer
    except MarkError:  # not learned yet: the text query proposes the first windows to mark
        scorer = text_scorer(archive.embed_text([label])[0])
    ids, scores = _scan(archive, scorer.direction)
    if len(ids) == 0:
        return []
    unmarked = np.ones(len(ids), bool)
    marked = np.asarray(marked_windows(archive, label), np.int64)  # copies of marked audio included
    at = np.minimum(np.searchsorted(ids, marked), len(ids) - 1)  # ids rise: no pass over them per mark
    unmarked[at[ids[at] == marked]] = False
    if not unmarked.any():
        return []
    boundary = scorer.boundary
    if boundary is None:
        boundary = float(np.quantile(scores[unmarked] if not unmarked.all() else scores, 1.0 - UNSURE_SHARE_WITHOUT_BOUNDARY))
    pool = min(int(np.count_nonzero(unmarked)), max(64, 16 * k))
    top = _first(np.where(unmarked, -scores, np.inf), pool)  # a marked window sorts last, after every other
    unsure = _first(np.where(unmarked, np.abs(scores - boundary), np.inf), pool)
    rows = _windows(archive, np.unique(ids[np.concatenate([top, unsure])]))
    picked: list[Suggestion] = []
    used: set[int] = set()
    for order, reason, quota in ((top, "top", (k + 1) // 2), (unsure, "unsure", k)):
        taken = 0
        for i in order:
            if len(picked) >= k or taken >= quota:
                break
            window_id = int(ids[i])
            row = rows[window_id]
            if row[0] in used:
                continue
            used.add(row[0])
            picked.append(Suggestion(window_id, row[0], row[1], row[2], row[3], row[4], float(scores[i]), reason))
            taken += 1
    return picked


def _scan(archive: Session, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every live window's cosine to ``direction``: the audit's block product (on the GPU's
    resident rows with ``--device cuda``), so a window scores as an audit scores it."""
    product = archive.block_product(np.asarray(direction, np.float32)[None, :])
    parts_ids, parts_scores = [], []
    for block in archive.store.aligned_blocks(product.block_rows):
        if len(block.ids):
            parts_ids.append(block.ids)
            parts_scores.append(product(block, block.ids - block.first_id)[0])
    if not parts_ids:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(parts_ids), np.concatenate(parts_scores)


def _first(keys: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` smallest keys, smallest first, ties by position: what a stable
    argsort's first ``count`` are, found by a partition (linear) instead of a full sort."""
    if count >= len(keys):
        return np.argsort(keys, kind="stable")
    kth = np.partition(keys, count - 1)[count - 1]
    below = np.flatnonzero(keys < kth)
    chosen = np.concatenate([below, np.flatnonzero(keys == kth)[: count - len(below)]])
    return chosen[np.lexsort((chosen, keys[chosen]))]


def _windows(archive: Session, window_ids: np.ndarray) -> dict[int, tuple]:
    rows = archive.catalog.con.execute(
        "SELECT w.id, w.recording_id, r.path, w.channel, w.start_s, w.end_s FROM windows w"
        " JOIN recordings r ON r.id = w.recording_id WHERE w.id IN (SELECT unnest(?::BIGINT[]))",
        [window_ids.tolist()],
    ).fetchall()
    return {int(r[0]): (int(r[1]), r[2], int(r[3]), float(r[4]), float(r[5])) for r in rows}
