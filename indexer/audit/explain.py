"""Why a saved run flagged nothing for a label: the threshold, the set's min_confidence, or
exclusive mode's one winner per window. "Nothing flagged" alone leaves an analyst guessing
whether the words, the threshold or the rules are at fault."""

from __future__ import annotations

from dataclasses import dataclass

from indexer.archive.catalog import Catalog
from indexer.audit import saved_runs as audit_runs


@dataclass(frozen=True)
class Unflagged:
    """One label of a run that flagged no recording, and what stopped it."""

    label: str
    best_score: float | None  # None: the run scored no recording
    threshold: float  # the cutoff flags were held to
    own_threshold: str  # the label's own, as written and as a score: "top 2% = 0.032", "0.35"
    min_score: float | None  # the set's, when it raised the cutoff above the label's own
    best_confidence: float | None  # among recordings at or above the cutoff; None when there are none
    min_confidence: float | None
    exclusive: bool

    @property
    def reason(self) -> str:
        if self.best_score is None:
            return f"{self.label}: no recording was scored"
        if self.best_confidence is None:
            if self.min_score is not None:
                return (f"{self.label}: best score {self.best_score:.3f}, below the set's min_score {self.min_score:g} "
                        f"(its own threshold: {self.own_threshold})")
            return f"{self.label}: best score {self.best_score:.3f}, below its threshold {self.own_threshold}"
        reached = f"recordings reach its cutoff {self.threshold:.3f} (best {self.best_score:.3f})"
        if self.min_confidence and self.best_confidence < self.min_confidence:
            return (f"{self.label}: {reached} but their best confidence is {self.best_confidence:.2f}, below the set's "
                    f"min_confidence {self.min_confidence:g}")
        if self.exclusive:
            return f"{self.label}: {reached} but another label wins those windows (exclusive mode: one label per window)"
        return f"{self.label}: best score {self.best_score:.3f}, cutoff {self.threshold:.3f}"


def unflagged_labels(catalog: Catalog, run_id: int) -> list[Unflagged]:
    """The run's labels that flagged nothing, each with the figures that explain it."""
    run = audit_runs.get_run(catalog, run_id)
    labelset = audit_runs.labelset_of(catalog, run)
    flagged = {label for (label,) in audit_runs.rows_query(
        catalog, [run.id], "SELECT DISTINCT label FROM audit_results WHERE run_id = ? AND flagged", [run.id])}
    found = []
    for label in labelset.labels:
        if label.name in flagged:
            continue
        spread = audit_runs.score_spread(catalog, run.id, label.name)
        [(confidence,)] = audit_runs.rows_query(
            catalog, [run.id], "SELECT max(confidence) FROM audit_results WHERE run_id = ? AND label = ? AND score >= ?",
            [run.id, label.name, spread.threshold],
        )
        written = "where its scorer says present" if label.name in run.learned_thresholds else str(labelset.threshold_for(label))
        own = f"{written} = {spread.own:.3f}" if written != f"{spread.own:g}" else written
        found.append(Unflagged(
            label=label.name, best_score=float(spread.scores[-1]) if len(spread.scores) else None,
            threshold=spread.threshold, own_threshold=own,
            min_score=labelset.min_score if spread.threshold > spread.own else None,
            best_confidence=None if confidence is None else float(confidence), min_confidence=labelset.min_confidence,
            exclusive=labelset.mode == "exclusive",
        ))
    return found
