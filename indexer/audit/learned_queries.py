"""Learned labels in a label set: each is one query vector (its scorer's direction), scored in the
same matrix product as the text labels, with the scorer's own boundary as its default threshold."""

from __future__ import annotations

from dataclasses import replace

from indexer.audit.labelset import LabelSet, Threshold
from indexer.learning.learned import LearnedLabel, newest_learned
from indexer.session import Session


def learned_labels_of(archive: Session, labelset: LabelSet) -> dict[int, LearnedLabel]:
    """The newest version of every learned label of the set, by its position."""
    return {i: newest_learned(archive, label.name) for i, label in enumerate(labelset.labels) if label.learned}


def scoring_labelset(labelset: LabelSet, learned: dict[int, LearnedLabel]) -> LabelSet:
    """The set as scored: a learned label without a threshold flags where its scorer says "present"
    (probability ≥ 0.5, i.e. cosine to its direction ≥ −bias/‖weights‖). The set's own rules
    (``min_score``, ``min_confidence``, exclusive mode) apply to it as to every label."""
    labels = list(labelset.labels)
    for i, threshold in scorer_thresholds(labelset, learned).items():
        labels[i] = replace(labels[i], threshold=Threshold("score", threshold))
    return replace(labelset, labels=tuple(labels)) if learned else labelset


def scorer_thresholds(labelset: LabelSet, learned: dict[int, LearnedLabel]) -> dict[int, float]:
    """Position -> the score threshold a learned label takes from its scorer (those without their own).
    A boundary past ±1 means "never" / "always": it stays just outside the cosine range."""
    found = {}
    for i, version in learned.items():
        boundary = version.scorer.boundary
        if labelset.labels[i].threshold is None and boundary is not None:
            found[i] = float(min(1.0, max(-1.0, boundary)))
    return found
