"""Audits: a label set scored against every window of the archive, saved as a run.

No audio model work: the label set's text is embedded (a fraction of a second) and the stored
window vectors are scanned with one matrix product (``scoring``). Standing audits (``audit watch``
or ``index --audit``) score only the recordings an indexing run added or changed (and earlier ones
whose flags a moved "top x%" cutoff can change) and keep their saved run equal to a fresh run of
the same set, so one definition serves retroactive and ongoing auditing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from indexer.archive.catalog import Catalog
from indexer.audit import saved_runs as audit_runs
from indexer.audit.labelset import LabelSet, check_bounds
from indexer.audit.learned_queries import (
    learned_labels_of,
    scorer_thresholds,
    scoring_labelset,
)
from indexer.audit.scoring import (
    AuditScores,
    LabelVectors,
    WindowTable,
    label_cutoffs,
    label_queries,
    percentiles,
    score_similarity,
)
from indexer.embedding import l2_normalise
from indexer.errors import ArchiveError
from indexer.learning.learned import LearnedLabel
from indexer.search.filtering import SearchFilters
from indexer.search.ranking import allowed_window_ids
from indexer.session import Session


@dataclass(frozen=True)
class StandingUpdate:
    run_id: int
    name: str
    recordings_scored: int
    new_flags: list[tuple[str, str, float, float]]  # (path, label, score, best_start_s)
    cleared: int = 0  # flags the run had before and has no more (their recordings changed, left or fell below a cutoff)
    replaced: list[int] = field(default_factory=list)  # standing runs this new one took over from


def label_vectors(embed_text: Callable[[list[str]], np.ndarray], labelset: LabelSet,
                  learned: dict[int, np.ndarray] | None = None) -> LabelVectors:
    """One ``embed_text`` call (``Session.embed_text``, or an encoder's) for every prompt and exclusion
    of the set; a learned label's row is its given query vector instead (``learned``: by position)."""
    check_bounds(labelset.labels)  # a set built in Python meets the limits a file or --labels does
    learned = learned or {}
    prompts = [p for i, label in enumerate(labelset.labels) if i not in learned for p in label.prompts]
    excluded = sorted({e for label in labelset.labels for e in label.exclude})
    vectors = embed_text(prompts + excluded) if prompts or excluded else np.empty((0, 0), np.float32)
    rows, at = [], 0
    for i, label in enumerate(labelset.labels):
        if i in learned:
            rows.append(np.asarray(learned[i], np.float32))
            continue
        rows.append(l2_normalise(vectors[at : at + len(label.prompts)].mean(axis=0)))
        at += len(label.prompts)
    dim = len(rows[0])
    return LabelVectors(
        vectors=np.stack(rows),
        exclusions=vectors[at:] if excluded else np.empty((0, dim), np.float32),
        excluded_by=tuple(tuple(excluded.index(e) for e in label.exclude) for label in labelset.labels),
    )


BLOCK_ROWS = 16_384
"""Stored rows read, and multiplied, at a time, in blocks aligned to the segment files. Every
product has this shape and a window always sits at the same row of it (its offset in its block),
because BLAS rounds a row differently with the matrix's shape (small matrices take other kernels):
so a window scores the same bits whichever others are read with it, and a standing audit scoring a
few recordings, or rescoring some, matches a full run. (Products of 1,024 rows made the full scan
25-30% slower; a block's rows not asked for are not converted, only multiplied.)"""


def collect_windows(
    archive: Session, filters: SearchFilters = SearchFilters(), recording_ids: np.ndarray | None = None
) -> WindowTable:
    """The window rows an audit scores (optionally filtered), each recording's rows contiguous."""
    table = archive.catalog.con.execute(
        "SELECT id, recording_id, start_s, end_s, channel FROM windows ORDER BY id"
    ).fetchnumpy()
    windows = WindowTable(
        ids=table["id"].astype(np.int64), recording=table["recording_id"].astype(np.int64), start_s=table["start_s"],
        end_s=table["end_s"], channel=table["channel"],
    )
    keep = None
    allowed = allowed_window_ids(archive, filters)
    if allowed is not None:
        keep = np.isin(windows.ids, allowed, assume_unique=True)
    if recording_ids is not None:
        chosen = np.isin(windows.recording, recording_ids)
        keep = chosen if keep is None else keep & chosen
    rising = bool((np.diff(windows.recording) >= 0).all())  # the usual case: no need to count recordings
    if len(windows.ids) and not rising and 1 + np.count_nonzero(np.diff(windows.recording)) != len(np.unique(windows.recording)):
        order = np.argsort(windows.recording, kind="stable")  # a recording's windows must be contiguous
        keep = order if keep is None else order[keep[order]]
    if keep is None:
        return windows
    return _rows_of(windows, keep)


def _rows_of(windows: WindowTable, keep: np.ndarray) -> WindowTable:
    return WindowTable(*(getattr(windows, f)[keep] for f in WindowTable.__dataclass_fields__))


def similarities(archive: Session, queries: np.ndarray, windows: WindowTable) -> np.ndarray:
    """``queries @ vectors.T`` for the windows of ``windows`` (in its column order), from the stored
    float16 rows one aligned block at a time (``BlockProduct``: every product of one shape, a window
    always in its own slot); float16 to float32 is exact, so this is float32 arithmetic on the stored
    values. Blocks none of ``windows`` lives in are not read."""
    out = np.empty((len(queries), len(windows.ids)), np.float32)
    if not len(windows.ids):
        return out
    in_order = bool((np.diff(windows.ids) > 0).all())
    order = np.arange(len(windows.ids)) if in_order else np.argsort(windows.ids, kind="stable")
    wanted = windows.ids[order]
    product = archive.block_product(queries, BLOCK_ROWS)
    seen = set()
    for block in archive.store.aligned_blocks(BLOCK_ROWS):
        seen.add(block.key)
        ids = block.ids
        if not len(ids):  # every window of the block deleted
            continue
        lo, hi = np.searchsorted(wanted, [ids[0], ids[-1] + 1])
        if lo == hi:
            continue
        at = np.searchsorted(ids, wanted[lo:hi])
        if (at >= len(ids)).any() or (ids[np.minimum(at, len(ids) - 1)] != wanted[lo:hi]).any():
            raise ArchiveError(DAMAGED)
        scores = product(block, ids[at] - block.first_id, None if hi - lo == len(ids) else at)
        if in_order:
            out[:, lo:hi] = scores
        else:
            out[:, order[lo:hi]] = scores
    if product.resident is not None:
        product.resident.keep_only(seen)
    return out


DAMAGED = "Some windows of the catalog have no stored vector; the archive's vector files are damaged."


def score(archive: Session, labelset: LabelSet, filters: SearchFilters = SearchFilters(),
          recording_ids: np.ndarray | None = None, learned: dict[int, LearnedLabel] | None = None,
          windows: WindowTable | None = None, peers_best: np.ndarray | None = None) -> AuditScores:
    """Learned labels enter as the query vectors of their newest versions (or of ``learned``, looked
    up by the caller); the versions and the thresholds they gave are in the result. ``windows``
    (from ``collect_windows``) replaces filters and recording ids; ``peers_best``: the best scores
    of the audit's other recordings, for its "top x%" cutoffs (``scoring.score_similarity``)."""
    learned = learned_labels_of(archive, labelset) if learned is None else learned
    windows = collect_windows(archive, filters, recording_ids) if windows is None else windows
    vectors = label_vectors(archive.embed_text, labelset, {i: found.scorer.direction for i, found in learned.items()})
    similarity = similarities(archive, label_queries(vectors), windows)
    scores = score_similarity(similarity, windows, vectors, scoring_labelset(labelset, learned), archive.logit_scale,
                              archive.manifest.hop_s, peers_best)
    names = [label.name for label in labelset.labels]
    return replace(scores, learned_versions={names[i]: found.version for i, found in learned.items()},
                   learned_thresholds={names[i]: t for i, t in scorer_thresholds(labelset, learned).items()},
                   product=product_kind(archive))


def product_kind(archive: Session) -> str:
    """Where audits compute their products (``Session.scan_kind``); a saved run records it."""
    return archive.scan_kind


def run_audit(archive: Session, labelset: LabelSet, filters: SearchFilters = SearchFilters(), standing: bool = False) -> audit_runs.AuditRun:
    """Score the whole (filtered) archive and save the run; returns the saved run. A standing run
    takes over from the standing runs it replaces (``replaced_by``): they stop being extended."""
    started = time.perf_counter()
    scores = score(archive, labelset, filters)
    older = replaced_by(archive, labelset, filters) if standing else []
    run = audit_runs.save_run(
        archive, labelset, _filters_json(filters), scores, standing=standing, seconds=time.perf_counter() - started
    )
    for old in older:
        audit_runs.set_standing(archive.catalog, old.id, False)
    return run


def replaced_by(archive: Session, labelset: LabelSet, filters: SearchFilters = SearchFilters()) -> list[audit_runs.AuditRun]:
    """The standing runs a new standing run of ``labelset`` over ``filters`` replaces: those of the
    same label-set name and filters (an edited label set, watched again), so one set never has two
    standing runs reporting flags side by side under old and new labels."""
    scope = _filters_json(filters)
    return [run for run in audit_runs.standing_runs(archive.catalog) if run.name == labelset.name and run.filters == scope]


def start_standing_audit(archive: Session, labelset: LabelSet) -> StandingUpdate | None:
    """``index --audit FILE``: a label set not yet standing is run over the whole archive and kept
    standing (replacing the standing run of an earlier version of the file); one already standing
    (same content) was just extended by the indexing run."""
    if any(run.labelset_hash == labelset.digest() and run.filters == _filters_json(SearchFilters())
           for run in audit_runs.standing_runs(archive.catalog)):
        return None
    older = [run.id for run in replaced_by(archive, labelset)]
    run = run_audit(archive, labelset, standing=True)
    flagged = audit_runs.results(archive.catalog, run.id).to_pylist()
    [(recordings,)] = audit_runs.rows_query(archive.catalog, [run.id], "SELECT count(DISTINCT recording_id) FROM audit_results"
                                            " WHERE run_id = ?", [run.id])
    return StandingUpdate(run.id, run.name, int(recordings), [(r["file"], r["label"], r["score"], r["best_start_s"]) for r in flagged],
                          replaced=older)


def extend_standing_audits(archive: Session, recording_ids: np.ndarray | None = None) -> list[StandingUpdate]:
    """Bring every standing audit to what a fresh run of its set would store now, bit for bit:
    recordings new to it, changed (``recording_ids``: what an indexing run wrote; a changed file is
    also known by its new window ids) or let in by new metadata are scored, those gone or filtered
    out leave, and earlier ones are scored again only where a "top x%" cutoff moved and could change
    their flags. A newer learned version, or another product (``product_kind``: an ``index --device
    cuda`` extending a run made on the CPU), scores the whole run again. Returns the runs that changed."""
    hinted = np.asarray([] if recording_ids is None else recording_ids, np.int64)
    updates = [_extend(archive, run, hinted) for run in audit_runs.standing_runs(archive.catalog)]
    return [update for update in updates if update is not None]


def _extend(archive: Session, run: audit_runs.AuditRun, hinted: np.ndarray) -> StandingUpdate | None:
    labelset = audit_runs.labelset_of(archive.catalog, run)
    learned = learned_labels_of(archive, labelset)
    names = [label.name for label in labelset.labels]
    same_versions = {names[i]: found.version for i, found in learned.items()} == run.learned_versions
    same_scoring = same_versions and run.product == product_kind(archive)  # else all is scored again, not mixed
    seen = archive.catalog.one("SELECT archive_generation FROM audit_runs WHERE id = ?", [run.id])[0]
    if same_scoring and seen == archive.catalog.generation():
        return None  # nothing in the catalog moved since the run was last brought up to date
    rules = scoring_labelset(labelset, learned)
    windows = collect_windows(archive, SearchFilters.from_json(json.loads(run.filters)))
    stored = stored_scores(archive.catalog, run)
    if not same_scoring or stored is None or not _consistent(stored, rules):
        scores = score(archive, labelset, learned=learned, windows=windows)  # all of it, one version, one product
        return _save(archive, run, scores, len(scores.recording_ids))
    kept = _rows(stored, _unchanged(stored, windows, hinted))
    new = np.setdiff1d(np.unique(windows.recording), kept.recording_ids)  # new, changed, or let in by the filter
    if not len(new) and len(kept.recording_ids) == len(stored.recording_ids):
        audit_runs.merge_results(archive, run, None)  # the archive's size and generation only
        return None
    fresh = score(archive, labelset, learned=learned, windows=_only(windows, new), peers_best=kept.score.T)
    cutoffs = label_cutoffs(np.concatenate([kept.score, fresh.score]).T, rules)
    moved = cutoffs != label_cutoffs(stored.score.T, rules)
    # a recording's flags change with a cutoff only if it has flagged windows or a window reaching the new one
    again = ((kept.flagged_windows > 0) | (kept.score >= cutoffs))[:, moved].any(axis=1)
    if again.any():
        others = np.concatenate([kept.score[~again], fresh.score]).T
        redone = score(archive, labelset, learned=learned, windows=_only(windows, kept.recording_ids[again]), peers_best=others)
        kept = _joined(_rows(kept, ~again), redone)
    both = _joined(kept, fresh)
    both = replace(both, percentile=percentiles(both.score.T), windows_scored=len(windows.ids),
                   learned_versions=fresh.learned_versions, learned_thresholds=fresh.learned_thresholds)
    return _save(archive, run, both, len(new))


PER_RECORDING = ("recording_ids", "score", "probability", "confidence", "percentile", "best_window", "best_start_s",
                 "best_end_s", "channel", "flagged_windows", "flagged_seconds", "flagged", "is_best")


def _rows(scores: AuditScores, keep: np.ndarray) -> AuditScores:
    return replace(scores, **{f: getattr(scores, f)[keep] for f in PER_RECORDING})


def _joined(a: AuditScores, b: AuditScores) -> AuditScores:
    return replace(a, **{f: np.concatenate([getattr(a, f), getattr(b, f)]) for f in PER_RECORDING})


def _only(windows: WindowTable, recording_ids: np.ndarray) -> WindowTable:
    return _rows_of(windows, np.isin(windows.recording, recording_ids))


def _save(archive: Session, run: audit_runs.AuditRun, scores: AuditScores, scored: int) -> StandingUpdate:
    new_flags, cleared = audit_runs.merge_results(archive, run, scores)
    return StandingUpdate(run.id, run.name, scored, new_flags, cleared)


def stored_scores(catalog: Catalog, run: audit_runs.AuditRun) -> AuditScores | None:
    """A run's rows read back into the arrays scoring gives (recordings by id; no cutoffs); None
    unless there is one row per recording and label. Scores were float32 before they were
    stored, so they come back exactly."""
    labels = list(run.labels)
    table = audit_runs.rows_query(
        catalog, [run.id], "SELECT recording_id, list_position(?, label) AS label_at, score, probability, confidence, percentile,"
        " best_window_id, best_start_s, best_end_s, channel, flagged_windows, flagged_seconds, flagged, is_best FROM audit_results"
        " WHERE run_id = ? ORDER BY recording_id, label_at", [labels, run.id], fetch="numpy",
    )
    if len(table["label_at"]) % len(labels):
        return None
    shape = (len(table["label_at"]) // len(labels), len(labels))
    recording = table["recording_id"].astype(np.int64).reshape(shape)
    if not (table["label_at"].reshape(shape) == np.arange(1, len(labels) + 1)).all() or not (recording == recording[:, :1]).all():
        return None
    kinds = {"score": np.float32, "probability": np.float32, "confidence": np.float32, "percentile": np.float64,
             "best_window_id": np.int64, "best_start_s": np.float64, "best_end_s": np.float64, "channel": np.int16,
             "flagged_windows": np.int32, "flagged_seconds": np.float64, "flagged": bool, "is_best": bool}
    arrays = {name.removesuffix("_id"): np.asarray(table[name]).astype(kind).reshape(shape) for name, kind in kinds.items()}
    return AuditScores(labels=tuple(labels), recording_ids=recording[:, 0].copy(), cutoffs=np.empty(0, np.float32),
                       windows_scored=run.windows_scored, **arrays)


def _consistent(stored: AuditScores, rules: LabelSet) -> bool:
    """Whether a run's rows obey a fresh run's arithmetic; one extended before standing audits kept
    to it may not (flags from percentiles, SQL's percentiles), and is scored again in full, once."""
    if not len(stored.recording_ids):
        return True
    return bool(np.array_equal(stored.flagged, stored.flagged_windows > 0)
                and (stored.score >= label_cutoffs(stored.score.T, rules))[stored.flagged].all()
                and np.array_equal(stored.percentile, percentiles(stored.score.T)))


def _unchanged(stored: AuditScores, windows: WindowTable, hinted: np.ndarray) -> np.ndarray:
    """Rows of recordings still audited and not written since: not hinted, and their best window
    still theirs (a file indexed again gets new window ids)."""
    ids, owners = windows.ids, windows.recording
    if not (np.diff(ids) > 0).all():
        order = np.argsort(ids, kind="stable")
        ids, owners = ids[order], owners[order]
    best = stored.best_window[:, 0]
    if not len(ids) or not len(best):
        return np.zeros(len(best), bool)
    at = np.minimum(np.searchsorted(ids, best), len(ids) - 1)
    return (ids[at] == best) & (owners[at] == stored.recording_ids) & ~np.isin(stored.recording_ids, hinted)


def _filters_json(filters: SearchFilters) -> str:
    return json.dumps(filters.to_json(), sort_keys=True)
