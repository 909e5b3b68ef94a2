"""Audits: a label set scored against every window of the archive, saved as a run.

No audio model work: the label set's text is embedded (a fraction of a second) and the stored
window vectors are scanned with one matrix product (``scoring``). Standing audits (``audit watch``
or ``index --audit``) score only the recordings an indexing run added or changed and fold them
into their saved run, so one definition serves retroactive and ongoing auditing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from indexer.archive.segments import to_float32
from indexer.audit import saved_runs as audit_runs
from indexer.audit.labelset import LabelSet
from indexer.audit.learned_queries import (
    learned_labels_of,
    scorer_thresholds,
    scoring_labelset,
)
from indexer.audit.scoring import (
    SCAN_THREADS,
    AuditScores,
    LabelVectors,
    WindowTable,
    label_queries,
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


def label_vectors(embed_text: Callable[[list[str]], np.ndarray], labelset: LabelSet,
                  learned: dict[int, np.ndarray] | None = None) -> LabelVectors:
    """One ``embed_text`` call (``Session.embed_text``, or an encoder's) for every prompt and exclusion
    of the set; a learned label's row is its given query vector instead (``learned``: by position)."""
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
"""Stored rows converted and multiplied at a time. Blocks are aligned to the segment files, so a
window is always scored in the same block and a standing audit's few recordings get exactly the
scores a full run gives them."""


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
    return WindowTable(*(getattr(windows, f)[keep] for f in WindowTable.__dataclass_fields__))


def similarities(archive: Session, queries: np.ndarray, windows: WindowTable) -> np.ndarray:
    """``queries @ vectors.T`` for the windows of ``windows`` (in its column order), streamed
    from the stored float16 rows one aligned block at a time, blocks in parallel (converting
    float16 is the slow part, and numpy does it without the GIL); float16 to float32 is exact, so
    this is float32 arithmetic on the stored values."""
    out = np.empty((len(queries), len(windows.ids)), np.float32)
    if not len(windows.ids):
        return out
    in_order = bool((np.diff(windows.ids) > 0).all())
    order = np.arange(len(windows.ids)) if in_order else np.argsort(windows.ids, kind="stable")
    wanted = windows.ids[order]
    product = _device_product(archive)
    queries = np.ascontiguousarray(queries, np.float32)
    buffers = threading.local()

    def score_block(block: tuple[np.ndarray, np.ndarray]) -> None:
        ids, rows = block
        lo, hi = np.searchsorted(wanted, [ids[0], ids[-1] + 1])
        if lo == hi:
            return
        if getattr(buffers, "rows", None) is None:
            buffers.rows = np.empty((BLOCK_ROWS, queries.shape[1]), np.float32)
        converted = to_float32(rows, buffers.rows)
        scores = product(converted, queries) if product is not None else queries @ converted.T
        if in_order and hi - lo == len(ids):  # the whole block, in order: no gather
            if not np.array_equal(ids, wanted[lo:hi]):
                raise ArchiveError(DAMAGED)
            out[:, lo:hi] = scores
            return
        at = np.searchsorted(ids, wanted[lo:hi])
        if (at >= len(ids)).any() or (ids[np.minimum(at, len(ids) - 1)] != wanted[lo:hi]).any():
            raise ArchiveError(DAMAGED)
        out[:, order[lo:hi]] = scores[:, at]

    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
        list(pool.map(score_block, archive.store.blocks(BLOCK_ROWS)))
    return out


DAMAGED = "Some windows of the catalog have no stored vector; the archive's vector files are damaged."


def score(archive: Session, labelset: LabelSet, filters: SearchFilters = SearchFilters(),
          recording_ids: np.ndarray | None = None, learned: dict[int, LearnedLabel] | None = None) -> AuditScores:
    """Learned labels enter as the query vectors of their newest versions (or of ``learned``, looked
    up by the caller); the versions and the thresholds they gave are in the result."""
    learned = learned_labels_of(archive, labelset) if learned is None else learned
    windows = collect_windows(archive, filters, recording_ids)
    vectors = label_vectors(archive.embed_text, labelset, {i: found.scorer.direction for i, found in learned.items()})
    similarity = similarities(archive, label_queries(vectors), windows)
    scores = score_similarity(similarity, windows, vectors, scoring_labelset(labelset, learned), archive.logit_scale,
                              archive.manifest.hop_s)
    names = [label.name for label in labelset.labels]
    return replace(scores, learned_versions={names[i]: found.version for i, found in learned.items()},
                   learned_thresholds={names[i]: t for i, t in scorer_thresholds(labelset, learned).items()})


def _device_product(archive: Session):
    """The GPU matrix product when the model runs on CUDA, or — the model not loaded because the
    label set's text was remembered — when the archive was opened with ``--device cuda``; else numpy."""
    if archive.encoder_loaded:
        device = getattr(archive.encoder, "device", None)
        if getattr(device, "type", None) != "cuda":
            return None
    elif str(archive.encoder_config.device).startswith("cuda"):
        device = archive.encoder_config.device
    else:
        return None
    from indexer.model.devices import gpu_matmul

    return gpu_matmul(device)


def run_audit(archive: Session, labelset: LabelSet, filters: SearchFilters = SearchFilters(), standing: bool = False) -> audit_runs.AuditRun:
    """Score the whole (filtered) archive and save the run; returns the saved run."""
    started = time.perf_counter()
    scores = score(archive, labelset, filters)
    return audit_runs.save_run(
        archive, labelset, _filters_json(filters), scores, standing=standing, seconds=time.perf_counter() - started
    )


def start_standing_audit(archive: Session, labelset: LabelSet) -> StandingUpdate | None:
    """``index --audit FILE``: a label set not yet standing is run over the whole archive and kept
    standing; one already standing (same content) was just extended by the indexing run."""
    if any(run.labelset_hash == labelset.digest() for run in audit_runs.standing_runs(archive.catalog)):
        return None
    run = run_audit(archive, labelset, standing=True)
    flagged = audit_runs.results(archive.catalog, run.id).to_pylist()
    recordings = archive.catalog.one("SELECT count(DISTINCT recording_id) FROM audit_results WHERE run_id = ?", [run.id])[0]
    return StandingUpdate(run.id, run.name, int(recordings), [(r["file"], r["label"], r["score"], r["best_start_s"]) for r in flagged])


def extend_standing_audits(archive: Session, recording_ids: np.ndarray) -> list[StandingUpdate]:
    """Fold the recordings an indexing run touched into every standing audit; report new flags."""
    updates = []
    for run in audit_runs.standing_runs(archive.catalog):
        labelset = audit_runs.labelset_of(archive.catalog, run)
        filters = SearchFilters.from_json(json.loads(run.filters))
        learned = learned_labels_of(archive, labelset)
        if {labelset.labels[i].name: found.version for i, found in learned.items()} != run.learned_versions:
            recording_ids = None  # a newer version was learned: the whole run is scored again with it, not mixed
        scores = score(archive, labelset, filters, recording_ids, learned)
        touched = scores.recording_ids if recording_ids is None else recording_ids
        new_flags = audit_runs.merge_results(archive, run, scoring_labelset(labelset, learned), scores, touched)
        updates.append(StandingUpdate(run.id, run.name, len(scores.recording_ids), new_flags))
    return updates


def _filters_json(filters: SearchFilters) -> str:
    return json.dumps(filters.to_json(), sort_keys=True)
