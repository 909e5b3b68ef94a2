"""Fitting a learned label: logistic regression on the marked windows' stored vectors.

Like perch-hoplite's agile classifier, unmarked windows enter as down-weighted "weak negatives"
(most of an archive is not the event). Beyond it, the label's text vector is the prior: the
scorer's features are the window's cosine to the text (scaled so its weight is nearly free of
the penalty) and the vector itself (penalised), so a few marks bend the text query instead of
replacing it, and with no marks the learned label is the text query exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIOR_SCALE = 10.0
"""The text-cosine feature is multiplied by this, so the weight it needs is small and barely penalised."""


@dataclass(frozen=True)
class FitOptions:
    weak_negatives: int = 10_000
    """Random unmarked windows taken as weak negatives."""
    weak_share: float = 0.5
    """All weak negatives together weigh this share of the marks' weight."""
    strength: float = 10.0
    """Inverse L2 penalty on the vector part (scikit-learn's ``C``): smaller keeps the scorer nearer the text.
    Unit vectors need weights of ≈ 10 to move a probability from 0.1 to 0.9 over a cosine step of 0.4."""
    folds: int = 5
    seed: int = 0


@dataclass(frozen=True)
class Scorer:
    """score(x) = <x, weights> + bias; sigmoid(score) is the probability the label is present."""

    weights: np.ndarray
    bias: float

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, np.float32) @ self.weights.astype(np.float32) + np.float32(self.bias)

    @property
    def direction(self) -> np.ndarray:
        """The unit query vector that ranks windows as the scorer does (the bias only shifts scores)."""
        return (self.weights / np.linalg.norm(self.weights)).astype(np.float32)

    @property
    def boundary(self) -> float | None:
        """The cosine to ``direction`` above which the scorer says "present" (None: it never learned one)."""
        norm = float(np.linalg.norm(self.weights))
        return None if self.bias == 0.0 and abs(norm - 1.0) < 1e-6 else -self.bias / norm


@dataclass(frozen=True)
class Evaluation:
    """Cross-validated over the marks: the learned scorer against the text query on the same marks."""

    folds: int
    roc_auc: float | None
    precision_at_10: float | None
    text_roc_auc: float | None
    text_precision_at_10: float | None

    def to_dict(self) -> dict:
        return dict(vars(self))


def text_scorer(text_vector: np.ndarray) -> Scorer:
    return Scorer(np.asarray(text_vector, np.float32), 0.0)


def fit_scorer(text_vector: np.ndarray, marked: np.ndarray, positive: np.ndarray, weak: np.ndarray,
               options: FitOptions = FitOptions()) -> Scorer:
    """The scorer for these marks (the text query itself when there are none, or only ✓ and no weak negatives)."""
    from sklearn.linear_model import (
        LogisticRegression,  # scikit-learn loads only when a label learns
    )

    text_vector = np.asarray(text_vector, np.float32)
    positive = np.asarray(positive, bool)
    if len(marked) == 0 or positive.all() and len(weak) == 0:
        return text_scorer(text_vector)
    if not positive.any():  # only ✗ so far: the text itself stands for what the label is, the marks push away
        marked, positive = np.vstack([marked, text_vector[None, :]]), np.append(positive, True)
    x = np.concatenate([marked, weak]).astype(np.float32)
    y = np.concatenate([positive, np.zeros(len(weak), bool)])
    weights = np.concatenate([np.ones(len(marked)), np.full(len(weak), options.weak_share * len(marked) / max(1, len(weak)))])
    weights[y] *= weights[~y].sum() / weights[y].sum()  # the two classes weigh the same: a few positives still move it
    features = np.hstack([PRIOR_SCALE * (x @ text_vector)[:, None], x])
    model = LogisticRegression(C=options.strength, max_iter=2_000)
    model.fit(features, y, sample_weight=weights)
    coef = model.coef_[0]
    direction = coef[0] * PRIOR_SCALE * text_vector + coef[1:]
    if not np.isfinite(direction).all() or float(np.linalg.norm(direction)) < 1e-9:
        return text_scorer(text_vector)  # nothing learned that points anywhere: the prior stands
    return Scorer(direction.astype(np.float32), float(model.intercept_[0]))


def evaluate(text_vector: np.ndarray, marked: np.ndarray, positive: np.ndarray, weak: np.ndarray,
             options: FitOptions = FitOptions()) -> Evaluation:
    """Stratified k-fold over the marks (weak negatives always train, never test)."""
    from sklearn.model_selection import StratifiedKFold

    positive = np.asarray(positive, bool)
    folds = min(options.folds, int(positive.sum()), int((~positive).sum()))
    text_scores = np.asarray(marked, np.float32) @ np.asarray(text_vector, np.float32)
    if folds < 2:
        return Evaluation(0, None, None, *_figures(text_scores, positive))
    learned = np.empty(len(marked), np.float32)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=options.seed).split(marked, positive):
        learned[test] = fit_scorer(text_vector, marked[train], positive[train], weak, options).scores(marked[test])
    return Evaluation(folds, *_figures(learned, positive), *_figures(text_scores, positive))


def _figures(scores: np.ndarray, positive: np.ndarray) -> tuple[float | None, float | None]:
    """ROC-AUC (None with one kind of mark only) and the share of positives among the 10 best-scored marks."""
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(positive, scores)) if positive.any() and not positive.all() else None
    top = np.argsort(-scores, kind="stable")[:10]
    return auc, float(positive[top].mean()) if len(top) else None
