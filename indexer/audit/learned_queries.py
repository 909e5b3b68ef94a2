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
    (probability ≥ 0.5, i.e. cosine to its direction ≥ −bias/‖weights‖)."""
    if not learned:
        return labelset
    labels = list(labelset.labels)
    for i, found in learned.items():
        boundary = found.scorer.boundary
        if labels[i].threshold is None and boundary is not None:
            labels[i] = replace(labels[i], threshold=Threshold("score", min(1.0, max(-1.0, boundary))))
    return replace(labelset, labels=tuple(labels))
