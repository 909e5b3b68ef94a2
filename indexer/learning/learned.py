"""Learned labels in use: fit a numbered version from a label's marks, read the newest back, and
propose the windows worth marking next."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from indexer.errors import MarkError
from indexer.learning.fit import Evaluation, FitOptions, Scorer, evaluate, fit_scorer
from indexer.learning.marks import (
    clean_label,
    marked_windows,
    marks_hash,
    marks_of,
    placed,
    writable,
)
from indexer.session import Session


@dataclass(frozen=True)
class LearnedLabel:
    label: str
    version: int
    scorer: Scorer
    marks_hash: str
    positives: int
    negatives: int
    weak_negatives: int
    evaluation: Evaluation | None


@dataclass(frozen=True)
class LearnReport:
    learned: LearnedLabel
    unplaced: int
    """Marks whose audio is not in the archive at present (kept, but not learned from)."""


def learn_label(archive: Session, name: str, options: FitOptions = FitOptions()) -> LearnReport:
    """Fit the label on its marks and store it as the next version."""
    writable(archive)
    label, key = clean_label(name)
    marks = marks_of(archive, label)
    label = marks[0].label if marks else label
    ids, positive = placed(marks)
    text = archive.embed_text([label])[0]
    marked = archive.window_vectors(ids) if len(ids) else np.empty((0, len(text)), np.float32)
    weak = _weak_negatives(archive, marked_windows(archive, label), options)
    scorer = fit_scorer(text, marked, positive, weak, options)
    evaluation = evaluate(text, marked, positive, weak, options) if len(ids) else None
    identity = archive.manifest.identity
    con = archive.catalog.con
    with archive.catalog.transaction():
        version = int(con.execute("SELECT coalesce(max(version), 0) + 1 FROM learned_labels WHERE label_key = ?",
                                  [key]).fetchone()[0])
        learned = LearnedLabel(label, version, scorer, marks_hash(marks), int(positive.sum()), int((~positive).sum()),
                               len(weak), evaluation)
        con.execute(
            "INSERT INTO learned_labels (label_key, version, label, weights, bias, marks_hash, positives, negatives,"
            " weak_negatives, report_json, model_id, model_revision, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [key, version, label, scorer.weights.astype(float).tolist(), scorer.bias, learned.marks_hash,
             learned.positives, learned.negatives, learned.weak_negatives,
             json.dumps(evaluation.to_dict() if evaluation else None), identity.model_id, identity.revision,
             datetime.now(timezone.utc).replace(tzinfo=None)],
        )
    return LearnReport(learned, sum(m.window_id is None for m in marks))


def newest_learned(archive: Session, name: str, version: int | None = None) -> LearnedLabel:
    """The newest fit of a label (or the version asked for); MarkError when it has never learned."""
    label, key = clean_label(name)
    row = archive.catalog.con.execute(
        "SELECT label, version, weights, bias, marks_hash, positives, negatives, weak_negatives, report_json"
        " FROM learned_labels WHERE label_key = ? AND (? IS NULL OR version = ?) ORDER BY version DESC LIMIT 1",
        [key, version, version],
    ).fetchone()
    if row is None:
        which = f"version {version} of " if version is not None else ""
        raise MarkError(f'There is no {which}learned label "{label}"; mark some windows and run '
                        f'`soundtrace label learn "{label}"` first.')
    report = json.loads(row[8])
    return LearnedLabel(row[0], int(row[1]), Scorer(np.asarray(row[2], np.float32), float(row[3])), row[4],
                        int(row[5]), int(row[6]), int(row[7]), Evaluation(**report) if report else None)


def _weak_negatives(archive: Session, marked_ids: np.ndarray, options: FitOptions) -> np.ndarray:
    """Vectors of random unmarked windows (the same ones for the same archive and seed)."""
    ids = np.setdiff1d(archive.store.ids(), marked_ids)
    if len(ids) == 0 or options.weak_negatives <= 0:
        return np.empty((0, archive.manifest.identity.dim), np.float32)
    take = min(len(ids), options.weak_negatives)
    picked = np.sort(np.random.default_rng(options.seed).choice(ids, size=take, replace=False))
    return archive.window_vectors(picked)
