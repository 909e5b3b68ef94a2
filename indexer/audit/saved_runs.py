"""Saved audit runs in the catalog: writing, reading back, exporting and comparing them."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pa_parquet

from indexer.archive.catalog import Catalog
from indexer.archive.durable import unwritable_reason
from indexer.archive.metadata import RECORDING_VIEW, output_name
from indexer.archive.sql import quote_identifier
from indexer.audit.labelset import LabelSet, Threshold
from indexer.audit.result_rows import result_table, rows_query
from indexer.audit.scoring import AuditScores, label_cutoff
from indexer.errors import AuditError
from indexer.search.filtering import SearchFilters, date_column
from indexer.session import Session

RUN_COLUMNS = (
    "id, name, labelset_source, labelset_hash, mode, labels, model_id, model_revision, filters, windows_scored,"
    " archive_windows, standing, seconds, created_at, updated_at, learned_versions, learned_thresholds, product"
)


@dataclass(frozen=True)
class AuditRun:
    id: int
    name: str
    labelset_source: str
    labelset_hash: str
    mode: str
    labels: list[str]
    model_id: str
    model_revision: str
    filters: str
    windows_scored: int
    archive_windows: int
    standing: bool
    seconds: float
    created_at: datetime
    updated_at: datetime
    learned_versions_json: str = "{}"
    learned_thresholds_json: str = "{}"
    product: str = "cpu"
    """Where its similarities were computed: 'cpu' (numpy) or 'cuda' (the GPU product)."""

    @property
    def scope(self) -> SearchFilters:
        """The filters the run was made with (empty: the whole archive)."""
        return SearchFilters.from_json(json.loads(self.filters or "{}"))

    @property
    def learned_versions(self) -> dict[str, int]:
        """Learned label name -> the version this run scored with (a standing run: its newest)."""
        return json.loads(self.learned_versions_json or "{}")

    @property
    def learned_thresholds(self) -> dict[str, float]:
        """Learned label name -> the score threshold its version gave it (labels without one of their own)."""
        return json.loads(self.learned_thresholds_json or "{}")


@dataclass(frozen=True)
class LabelCount:
    label: str
    flagged_recordings: int
    flagged_seconds: float
    best_score: float


@dataclass(frozen=True)
class RunDiff:
    """Two runs compared over what both scored: the recordings in both and the labels in both
    (a recording one run's filters left out is neither newly flagged nor cleared)."""

    a: AuditRun
    b: AuditRun
    newly_flagged: list[tuple[str, str, float]]  # (path, label, score in b)
    cleared: list[tuple[str, str, float]]  # (path, label, score in a)
    counts: list[tuple[str, int | None, int | None]]  # (label, flagged in a, in b; None: not a label of that run)
    scored_a: int = 0  # recordings each run scored
    scored_b: int = 0
    compared: int = 0  # recordings both scored: what the lists and counts are about

    @property
    def same_scope(self) -> bool:
        return self.scored_a == self.scored_b == self.compared


@dataclass(frozen=True)
class ScoreSpread:
    """Every recording's best score for one label of a run (ascending): what a threshold cuts."""

    label: str
    scores: np.ndarray
    threshold: float  # the cutoff flags were held to: the label's own, raised to the set's min_score
    own: float = 0.0  # the label's own threshold as a score ("top x%" resolved over these scores)

    def percentile(self, value: float) -> float:
        """Percent of recordings scoring at or below ``value`` (the rule audit runs store)."""
        if not len(self.scores):
            return 0.0
        return 100.0 * int(np.searchsorted(self.scores, value, side="right")) / len(self.scores)

    def at_or_above(self, value: float) -> int:
        """How many recordings a threshold of ``value`` would keep."""
        return len(self.scores) - int(np.searchsorted(self.scores, value, side="left"))


PERIODS = ("day", "week", "month")


# --- writing -------------------------------------------------------------------------------------


def save_run(archive: Session, labelset: LabelSet, filters: str, scores: AuditScores, standing: bool, seconds: float) -> AuditRun:
    catalog = archive.catalog
    identity = archive.manifest
    run_id = int(catalog.one("SELECT coalesce(max(id), 0) + 1 FROM audit_runs")[0])
    with _new_files(catalog, run_id, scores) as written, catalog.transaction():
        catalog.con.execute(
            f"INSERT INTO audit_runs ({RUN_COLUMNS.replace(', created_at, updated_at', '')}, labelset_json,"
            " archive_generation, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), now())",
            [
                run_id, labelset.name, labelset.source, labelset.digest(), labelset.mode, list(scores.labels),
                identity.model_id, identity.revision, filters, scores.windows_scored, catalog.window_count(), standing,
                seconds, json.dumps(scores.learned_versions, sort_keys=True),
                json.dumps(scores.learned_thresholds, sort_keys=True), scores.product,
                json.dumps(labelset.to_dict(), sort_keys=True), catalog.generation(),
            ],
        )
        catalog.name_run_files(run_id, written)
    return get_run(catalog, run_id)


@contextmanager
def _new_files(catalog: Catalog, run_id: int, scores: AuditScores | None) -> Iterator[list]:
    """The run's rows in new files (none for ``scores`` None) for the caller's transaction to name;
    removed again if it fails. Files a save or merge killed before its commit left are removed first."""
    files = catalog.run_files
    files.remove(files.orphans({f.name for f in catalog.run_file_records()}))
    written = files.write(run_id, result_table(run_id, scores)) if scores is not None else []
    try:
        yield written
    except BaseException:
        files.remove([f.name for f in written])
        raise


def merge_results(archive: Session, run: AuditRun, scores: AuditScores | None) -> tuple[list, int]:
    """A standing run's rows replaced by ``scores``: every row, as a fresh run of its set would
    store them now (``runner.extend_standing_audits`` works them out, scoring only what changed);
    None keeps the rows and brings only the archive's size up to date. Returns the flags (path,
    label, score, best start) the run did not have before, and how many it had that it has no more."""
    catalog = archive.catalog
    flagged = ("SELECT a.recording_id, a.label, r.path, a.score, a.best_start_s FROM audit_results a JOIN recordings r"
               " ON r.id = a.recording_id WHERE a.run_id = ? AND a.flagged ORDER BY a.score DESC, r.path, a.label")
    before = set(rows_query(catalog, [run.id],  # not joined: a pruned recording's flags count as cleared
        "SELECT recording_id, label FROM audit_results WHERE run_id = ? AND flagged", [run.id])) if scores is not None else set()
    replaced: list[str] = []
    with _new_files(catalog, run.id, scores) as written, catalog.transaction():
        if scores is not None:
            replaced = catalog.name_run_files(run.id, written)
            catalog.con.execute(
                "UPDATE audit_runs SET windows_scored = ?, learned_versions = ?, learned_thresholds = ?, product = ?,"
                " updated_at = now() WHERE id = ?", [scores.windows_scored, json.dumps(scores.learned_versions, sort_keys=True),
                                                     json.dumps(scores.learned_thresholds, sort_keys=True), scores.product, run.id],
            )
        catalog.con.execute("UPDATE audit_runs SET archive_windows = ?, archive_generation = ? WHERE id = ?",
                            [catalog.window_count(), catalog.generation(), run.id])
    catalog.run_files.remove(replaced)  # after the commit: until then they were the run's rows
    if scores is None:
        return [], 0
    after = rows_query(catalog, [run.id], flagged, [run.id])
    kept = {(rec, label) for rec, label, *_ in after}
    return [(path, label, score, start) for rec, label, path, score, start in after if (rec, label) not in before], len(before - kept)


# --- reading -------------------------------------------------------------------------------------


def list_runs(catalog: Catalog) -> list[AuditRun]:
    return [AuditRun(*row) for row in catalog.con.execute(f"SELECT {RUN_COLUMNS} FROM audit_runs ORDER BY id").fetchall()]


def standing_runs(catalog: Catalog) -> list[AuditRun]:
    return [run for run in list_runs(catalog) if run.standing]


def get_run(catalog: Catalog, ref: int | str) -> AuditRun:
    """A run by id, or the latest run with that label-set name."""
    text = str(ref).strip()
    if text.isdigit():
        row = catalog.one(f"SELECT {RUN_COLUMNS} FROM audit_runs WHERE id = ?", [int(text)])
    else:
        row = catalog.one(f"SELECT {RUN_COLUMNS} FROM audit_runs WHERE name = ? ORDER BY id DESC LIMIT 1", [text])
    if row is None:
        known = ", ".join(f"{r.id} ({r.name})" for r in list_runs(catalog)[-10:]) or "none yet"
        raise AuditError(f"There is no audit run '{ref}'; runs: {known}.")
    return AuditRun(*row)


def labelset_of(catalog: Catalog, run: AuditRun) -> LabelSet:
    """The run's label set as it was parsed when the run was made."""
    text = catalog.one("SELECT labelset_json FROM audit_runs WHERE id = ?", [run.id])[0]
    return LabelSet.from_dict(json.loads(text), source=run.labelset_source)


def set_standing(catalog: Catalog, run_id: int, standing: bool) -> None:
    catalog.con.execute("UPDATE audit_runs SET standing = ? WHERE id = ?", [standing, run_id]).fetchall()


def label_counts(catalog: Catalog, run_id: int) -> list[LabelCount]:
    rows = rows_query(
        catalog, [run_id], "SELECT label, count(*) FILTER (WHERE flagged), coalesce(sum(flagged_seconds) FILTER (WHERE flagged), 0),"
        " max(score) FROM audit_results WHERE run_id = ? GROUP BY label", [run_id],
    )
    order = {label: i for i, label in enumerate(get_run(catalog, run_id).labels)}
    return sorted((LabelCount(*row) for row in rows), key=lambda c: order.get(c.label, 0))


def results(catalog: Catalog, run_id: int, *, flagged_only: bool = True, best_only: bool = False, limit: int | None = None) -> pa.Table:
    """Result rows joined with each recording's path and metadata, best score first; the metadata
    columns are named ``meta.<column>``, so none can shadow a field of the run's."""
    meta = "".join(f", r.{quote_identifier(c)} AS {quote_identifier(output_name(c))}" for c in catalog.metadata_columns())
    where = " AND a.flagged" if flagged_only else ""
    where += " AND a.is_best" if best_only else ""
    sql = (
        f"SELECT r.path AS file, a.label, a.score, a.probability, a.confidence, a.percentile, a.best_start_s,"
        f" a.best_end_s, a.channel, a.flagged_windows, a.flagged_seconds, a.flagged, a.is_best, a.recording_id,"
        f" a.best_window_id{meta} FROM audit_results a JOIN {RECORDING_VIEW} r ON r.id = a.recording_id"
        f" WHERE a.run_id = ?{where} ORDER BY a.score DESC, r.path, a.label" + (" LIMIT ?" if limit else "")
    )
    return rows_query(catalog, [int(run_id)], sql, [int(run_id)] + ([int(limit)] if limit else []), fetch="arrow")


def export(catalog: Catalog, run_id: int, path: Path, fmt: str, all_labels: bool = False, highlights: dict | None = None) -> int:
    """The origin tool's batch columns (file, best label, score, confidence, highlight), the run's
    other fields, then the metadata (``meta.<column>``). A file that cannot be written is an
    AuditError naming it."""
    table = results(catalog, run_id, flagged_only=False, best_only=not all_labels)
    rows = table.to_pylist()
    for row in rows:
        spot = (highlights or {}).get(row["recording_id"])
        use = spot is not None and (all_labels is False or row["is_best"])
        row["highlight_start_s"] = spot.start_s if use else row["best_start_s"]
        row["highlight_end_s"] = spot.end_s if use else row["best_end_s"]
        row["best_label" if not all_labels else "label"] = row.pop("label")
    first = ["file", "label" if all_labels else "best_label", "score", "confidence", "highlight_start_s", "highlight_end_s"]
    columns = first + [c for c in (rows[0] if rows else {}) if c not in first]
    out = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows]) if rows else pa.table({c: [] for c in first})
    path = Path(path)
    try:
        if fmt == "parquet":
            pa_parquet.write_table(out, path)
        else:
            pa_csv.write_csv(out, path)
    except OSError as exc:  # pyarrow raises these as OSError (FileNotFoundError, PermissionError, ...)
        reason = unwritable_reason(path) or (os.strerror(exc.errno).lower() if exc.errno else str(exc).splitlines()[0])
        raise AuditError(f"Cannot write the export to {path}: {reason}.") from None
    return out.num_rows


_BOTH_SCORED = (
    "SELECT recording_id FROM audit_results WHERE run_id = ? INTERSECT SELECT recording_id FROM audit_results WHERE run_id = ?"
)


def diff(catalog: Catalog, ref_a: int | str, ref_b: int | str) -> RunDiff:
    """What changed from run a to run b, over the recordings and labels both scored."""
    a, b = get_run(catalog, ref_a), get_run(catalog, ref_b)
    common_labels = [label for label in b.labels if label in a.labels]
    sql = (
        "SELECT r.path, x.label, x.score FROM audit_results x JOIN recordings r ON r.id = x.recording_id"
        f" WHERE x.run_id = ? AND x.flagged AND list_contains(?, x.label) AND x.recording_id IN ({_BOTH_SCORED})"
        " AND NOT EXISTS (SELECT 1 FROM audit_results y WHERE y.run_id = ?"
        " AND y.recording_id = x.recording_id AND y.label = x.label AND y.flagged) ORDER BY x.score DESC, r.path"
    )
    both = [a.id, b.id]
    newly = rows_query(catalog, both, sql, [b.id, common_labels, a.id, b.id, a.id])
    cleared = rows_query(catalog, both, sql, [a.id, common_labels, a.id, b.id, b.id])
    flagged = dict(((run, label), int(n)) for run, label, n in rows_query(
        catalog, both, "SELECT run_id, label, count(*) FILTER (WHERE flagged) FROM audit_results"
        f" WHERE list_contains(?, run_id) AND recording_id IN ({_BOTH_SCORED}) GROUP BY ALL", [both, a.id, b.id],
    ))
    scored = dict(rows_query(
        catalog, both, "SELECT run_id, count(DISTINCT recording_id) FROM audit_results WHERE list_contains(?, run_id)"
        " GROUP BY run_id", [both],
    ))
    compared = int(rows_query(catalog, both, f"SELECT count(*) FROM ({_BOTH_SCORED})", [a.id, b.id])[0][0])
    counts = [(label, flagged.get((a.id, label), 0) if label in a.labels else None,
               flagged.get((b.id, label), 0) if label in b.labels else None)
              for label in dict.fromkeys(a.labels + b.labels)]
    return RunDiff(a, b, newly, cleared, counts, int(scored.get(a.id, 0)), int(scored.get(b.id, 0)), compared)


# --- summaries for charts ------------------------------------------------------------------------


def score_spread(catalog: Catalog, run_id: int, label: str) -> ScoreSpread:
    """One label's scores over all recordings of a run, with its threshold as a score (for a histogram)."""
    run = get_run(catalog, run_id)
    if label not in run.labels:
        raise AuditError(f"Run {run.id} has no label '{label}'; its labels: {', '.join(run.labels)}.")
    scores = np.sort(rows_query(
        catalog, [run.id], "SELECT score FROM audit_results WHERE run_id = ? AND label = ?", [run.id, label], fetch="numpy"
    )["score"].astype(np.float64))
    labelset = labelset_of(catalog, run)
    threshold = labelset.threshold_for(next(x for x in labelset.labels if x.name == label))
    if label in run.learned_thresholds:  # a learned label flagged where its version's scorer said "present"
        threshold = Threshold("score", run.learned_thresholds[label])
    own = float(np.float32(label_cutoff(scores, threshold)))  # as scoring holds it: float32
    cutoff = max(own, float(np.float32(labelset.min_score))) if labelset.min_score is not None else own
    return ScoreSpread(label, scores, cutoff, own)


def recordings_flagged(catalog: Catalog, run_id: int) -> tuple[int, int]:
    """(recordings the run scored, recordings it flagged for at least one label)."""
    [(scored, flagged)] = rows_query(
        catalog, [int(run_id)], "SELECT count(DISTINCT recording_id), count(DISTINCT recording_id) FILTER (WHERE flagged)"
        " FROM audit_results WHERE run_id = ?", [int(run_id)],
    )
    return int(scored), int(flagged)


def flagged_over_time(catalog: Catalog, run_id: int, period: str = "day", column: str | None = None) -> pa.Table:
    """(period, label, flagged, scored) per day/week/month of the metadata date (else the file's mtime)."""
    if period not in PERIODS:
        raise AuditError(f"A period is one of {', '.join(PERIODS)}, not '{period}'.")
    dated = date_column(catalog.filter_columns(), catalog.metadata_columns(), column)
    day = f"CAST(r.{quote_identifier(dated)} AS DATE)"
    counts = _flag_counts_sql(catalog, run_id, f"CAST(date_trunc('{period}', {day}) AS DATE)", "period", f"{day} IS NOT NULL")
    # every period from the first to the last, empty ones as zeros, so a chart's lines do not
    # bridge days (weeks, months) when nothing was recorded
    return rows_query(
        catalog, [int(run_id)], f"WITH counts AS ({counts}),"
        " periods AS (SELECT CAST(unnest(generate_series(min(period), max(period), INTERVAL 1 " + period + ")) AS DATE)"
        " AS period FROM counts),"
        " labels AS (SELECT DISTINCT label FROM counts)"
        " SELECT p.period, l.label, coalesce(c.flagged, 0) AS flagged, coalesce(c.scored, 0) AS scored"
        " FROM periods p CROSS JOIN labels l LEFT JOIN counts c ON c.period = p.period AND c.label = l.label"
        " ORDER BY 1, 2", fetch="arrow",
    )


def flagged_by(catalog: Catalog, run_id: int, column: str) -> pa.Table:
    """(value, label, flagged, scored) per value of one catalog or metadata column; NULL is '(none)'."""
    match = {c.lower(): c for c in catalog.filter_columns()}.get(str(column).lower())
    if match is None:
        raise AuditError(f"Unknown column '{column}'; known columns: {', '.join(sorted(catalog.filter_columns()))}.")
    value = f"coalesce(CAST(r.{quote_identifier(match)} AS VARCHAR), '(none)')"
    return _flag_counts(catalog, run_id, value, "value", "TRUE")


def _flag_counts(catalog: Catalog, run_id: int, key_sql: str, key: str, where: str) -> pa.Table:
    return rows_query(catalog, [int(run_id)], _flag_counts_sql(catalog, run_id, key_sql, key, where), fetch="arrow")


def _flag_counts_sql(catalog: Catalog, run_id: int, key_sql: str, key: str, where: str) -> str:
    run = get_run(catalog, run_id)
    return (
        f"SELECT {key_sql} AS {key}, a.label, count(*) FILTER (WHERE a.flagged) AS flagged, count(*) AS scored"
        f" FROM audit_results a JOIN {RECORDING_VIEW} r ON r.id = a.recording_id"
        f" WHERE a.run_id = {int(run.id)} AND {where} GROUP BY ALL ORDER BY 1, 2"
    )
