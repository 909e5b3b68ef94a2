"""``soundtrace audit ...``: run label sets over the archive, keep, show, export and compare runs.

The logic lives in ``indexer.audit``; this module only reads flags and prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

from indexer.cli.options import archive_option, collect, model_options, open_archive
from indexer.cli.output import Console, print_audit_run, print_diff, print_runs, shown


@dataclass(frozen=True)
class LabelSetRequest:
    """A label set FILE, or an inline one (--labels with its --name, --mode and --threshold)."""

    file: Path | None
    labels: str | None
    name: str | None
    mode: str | None
    threshold: str | None

    def load(self):
        from indexer.audit.labelset import inline_labelset
        from indexer.audit.labelset_yaml import load_labelset

        if (self.file is None) == (self.labels is None):
            raise click.UsageError("Give a label set FILE.yaml or --labels \"a, b, c\" (one of them).")
        if self.file is not None:
            if any(v is not None for v in (self.name, self.mode, self.threshold)):
                raise click.UsageError("--name, --mode and --threshold go with --labels; a YAML file says them itself.")
            return load_labelset(self.file)
        options = {k: v for k, v in {"mode": self.mode, "threshold": self.threshold}.items() if v is not None}
        return inline_labelset(self.labels, name=self.name, **options)


@dataclass(frozen=True)
class FilterRequest:
    where: str | None
    since: str | None
    until: str | None
    date_column: str | None

    def filters(self):
        from indexer.search.filtering import SearchFilters

        return SearchFilters(where=self.where, since=self.since, until=self.until, date_column=self.date_column)


def _labelset_options(func):
    func = collect(LabelSetRequest, "labelset")(func)
    func = click.option("--labels", default=None, help="Inline label set instead of a file: \"complaint, abuse, music but not speech\".")(func)
    func = click.option("--name", default=None, help="Name of an inline label set [default: inline].")(func)
    func = click.option("--mode", type=click.Choice(["exclusive", "multi-label"]), default=None, help="For inline labels [default: exclusive].")(func)
    func = click.option("--threshold", default=None, help="For inline labels: a cosine score (0.3) or \"top 1%\".")(func)
    return click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))(func)


@click.group()
def audit() -> None:
    """Score a label set against every indexed window; saved runs, exports, diffs, standing audits."""


@audit.command("run")
@_labelset_options
@archive_option
@click.option("--where", default=None, help="Only recordings matching this metadata filter.")
@click.option("--since", default=None, help="Only recordings dated on or after YYYY-MM-DD.")
@click.option("--until", default=None, help="Only recordings dated on or before YYYY-MM-DD.")
@click.option("--date-column", default=None, help="Column --since/--until compare.")
@collect(FilterRequest, "filters")
@click.option("--watch", is_flag=True, help="Keep it standing: every later `index` run extends it with the new recordings.")
@click.option("--limit", default=20, show_default=True, help="Flagged recordings to list.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@model_options
def run_command(labelset: LabelSetRequest, archive_dir, filters: FilterRequest, watch, limit, as_json, encoder_config):
    """Run label set FILE (or --labels) over the whole archive and save the run."""
    chosen = labelset.load()
    with open_archive(archive_dir, encoder_config) as archive:
        _run_and_show(archive, chosen, filters.filters(), watch, limit, as_json)


@audit.command("watch")
@_labelset_options
@archive_option
@model_options
def watch_command(labelset: LabelSetRequest, archive_dir, encoder_config):
    """Run a label set now and keep it standing (same as `audit run --watch`)."""
    chosen = labelset.load()
    with open_archive(archive_dir, encoder_config) as archive:
        _run_and_show(archive, chosen, FilterRequest(None, None, None, None).filters(), True, 20, False)


def _run_and_show(archive, labelset, filters, standing: bool, limit: int, as_json: bool) -> None:
    """Run and print; a standing run says which standing runs (of an earlier version) it replaces."""
    from indexer.audit.runner import replaced_by, run_audit

    older = replaced_by(archive, labelset, filters) if standing else []
    run = run_audit(archive, labelset, filters, standing=standing)
    _show(archive, run, limit, as_json)
    if older:
        Console().err(f"audit run {run.id} replaces standing run {', '.join(str(o.id) for o in older)} "
                      "(the same label set's name and filters); that one is no longer extended")


@audit.command("unwatch")
@click.argument("run_ref")
@archive_option
def unwatch_command(run_ref, archive_dir):
    """Stop extending a standing run after indexing (its results stay)."""
    from indexer.audit import saved_runs as audit_runs

    with open_archive(archive_dir) as archive:
        run = audit_runs.get_run(archive.catalog, run_ref)
        audit_runs.set_standing(archive.catalog, run.id, False)
    click.echo(shown(f"audit run {run.id} ({run.name}) is no longer standing"))


@audit.command("list")
@archive_option
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def list_command(archive_dir, as_json):
    """Saved audit runs."""
    from indexer.audit import saved_runs as audit_runs

    with open_archive(archive_dir, read_only=True) as archive:
        runs = audit_runs.list_runs(archive.catalog)
    if as_json:
        click.echo(json.dumps([{k: v for k, v in _run_dict(r).items() if k != "labelset_source"} for r in runs], indent=2, default=str))
    else:
        print_runs(Console(), runs)


@audit.command("show")
@click.argument("run_ref")
@archive_option
@click.option("--limit", default=20, show_default=True, help="Flagged recordings to list.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def show_command(run_ref, archive_dir, limit, as_json):
    """One run: its label set, counts per label, the top flagged recordings (RUN is an id or a name)."""
    from indexer.audit import saved_runs as audit_runs

    with open_archive(archive_dir, read_only=True) as archive:
        _show(archive, audit_runs.get_run(archive.catalog, run_ref), limit, as_json)


def _run_dict(run) -> dict:
    data = {k: v for k, v in vars(run).items() if k not in ("learned_versions_json", "learned_thresholds_json")}
    return {**data, "filters": run.scope.to_json(), "learned_versions": run.learned_versions,
            "learned_thresholds": run.learned_thresholds}


def _show(archive, run, limit: int, as_json: bool) -> None:
    from indexer.audit import saved_runs as audit_runs
    from indexer.audit.explain import unflagged_labels

    counts = audit_runs.label_counts(archive.catalog, run.id)
    flagged = audit_runs.results(archive.catalog, run.id, limit=limit).to_pylist()
    unflagged = unflagged_labels(archive.catalog, run.id)
    if as_json:
        payload = {**_run_dict(run), "counts": [vars(c) for c in counts], "flagged": flagged,
                   "unflagged": [{**vars(u), "reason": u.reason} for u in unflagged]}
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        print_audit_run(Console(), run, counts, flagged, unflagged)


@audit.command("export")
@click.argument("run_ref")
@archive_option
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write CSV here.")
@click.option("--parquet", "parquet_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write Parquet here.")
@click.option("--all-labels", is_flag=True, help="One row per recording and label instead of the best label only.")
@click.option("--refine", "refine_top", type=int, default=0, show_default=True,
              help="Refine the highlight of the N best flagged recordings to the 1–3 s that matter (runs the audio model).")
@model_options
def export_command(run_ref, archive_dir, csv_path, parquet_path, all_labels, refine_top, encoder_config):
    """File, best label, score, confidence, highlight start/end and metadata, per recording."""
    from indexer.audit import saved_runs as audit_runs

    if (csv_path is None) == (parquet_path is None):
        raise click.UsageError("Give exactly one of --csv FILE or --parquet FILE.")
    with open_archive(archive_dir, encoder_config, read_only=True) as archive:
        run = audit_runs.get_run(archive.catalog, run_ref)
        highlights = _refine_flagged(archive, run, refine_top) if refine_top else None
        rows = audit_runs.export(archive.catalog, run.id, csv_path or parquet_path, "csv" if csv_path else "parquet", all_labels, highlights)
    click.echo(shown(f"wrote {rows} rows to {csv_path or parquet_path}"), err=True)


def _refine_flagged(archive, run, top: int) -> dict:
    """Best-label highlights of the top flagged recordings, one model call per label."""
    from indexer.audit import saved_runs as audit_runs
    from indexer.audit.runner import label_vectors
    from indexer.learning.learned import newest_learned
    from indexer.search.highlight import refine_hits

    labelset = audit_runs.labelset_of(archive.catalog, run)
    learned = {i: newest_learned(archive, label.name, run.learned_versions.get(label.name)).scorer.direction
               for i, label in enumerate(labelset.labels) if label.learned}  # the versions the run scored with
    vectors = label_vectors(archive.embed_text, labelset, learned).vectors
    rows = audit_runs.results(archive.catalog, run.id, best_only=True, limit=top).to_pylist()
    found = {}
    for i, label in enumerate(run.labels):
        hits = [_as_hit(r) for r in rows if r["label"] == label]
        if hits:
            found.update(refine_hits(archive, hits, vectors[i], skip_unreadable=True))
    return found


def _as_hit(row: dict):
    from indexer.search.ranking import RecordingHit, WindowHit

    best = WindowHit(row["best_window_id"], row["channel"], row["best_start_s"], row["best_end_s"], row["score"])
    return RecordingHit(0, row["recording_id"], row["file"], row["score"], best, (best,), 0.0)


@audit.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@archive_option
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def diff_command(run_a, run_b, archive_dir, as_json):
    """What changed from RUN_A to RUN_B: newly flagged, cleared, counts per label."""
    from indexer.audit import saved_runs as audit_runs

    with open_archive(archive_dir, read_only=True) as archive:
        change = audit_runs.diff(archive.catalog, run_a, run_b)
    if as_json:
        click.echo(json.dumps({
            "a": change.a.id, "b": change.b.id,
            "scope": {"a": {"filters": change.a.scope.to_json(), "recordings_scored": change.scored_a},
                      "b": {"filters": change.b.scope.to_json(), "recordings_scored": change.scored_b},
                      "recordings_compared": change.compared},
            "newly_flagged": [dict(zip(("path", "label", "score"), row)) for row in change.newly_flagged],
            "cleared": [dict(zip(("path", "label", "score"), row)) for row in change.cleared],
            "counts": [{"label": label, "flagged_a": a, "flagged_b": b} for label, a, b in change.counts],
        }, indent=2, default=str))
    else:
        print_diff(Console(), change)
