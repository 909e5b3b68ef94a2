"""``soundtrace label``: mark hits right or wrong, learn the label from the marks, see what to mark next."""

from __future__ import annotations

import json
from pathlib import Path

import click

from indexer.cli.options import archive_option, model_options, open_archive
from indexer.cli.output import Console, format_seconds, shown


@click.group()
def label() -> None:
    """Labels that learn from an analyst's marks (a linear scorer over the stored vectors)."""


@label.command()
@click.argument("name")
@click.option("--window", "window_ids", type=int, multiple=True, help="Window id to mark (repeatable): the window column of `soundtrace search`.")
@click.option("--negative", is_flag=True, help="The label is NOT present in these windows.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A CSV with the columns window_id,positive (1/0, true/false, yes/no).")
@click.option("--note", default=None, help="A note kept with the marks.")
@archive_option
def mark(name, window_ids, negative, csv_path, note, archive_dir):
    """Mark windows as showing NAME (or, with --negative, as not showing it)."""
    from indexer.learning.marks import mark_windows, read_marks_csv

    if bool(window_ids) == bool(csv_path):
        raise click.UsageError("Give --window ID (one or more) or --csv FILE.")
    if csv_path and negative:
        raise click.UsageError("--negative is for --window; a CSV says each window's verdict in its positive column.")
    ids, verdicts = read_marks_csv(csv_path) if csv_path else (list(window_ids), not negative)
    with open_archive(archive_dir) as archive, _MarkProgress(len(ids)) as progress:
        count = mark_windows(archive, name, ids, verdicts, note=note, progress=progress.update)
    click.echo(f"Marked {count} window(s) for {shown(name)!r}.")


class _MarkProgress:
    """A bar on stderr while a long list of marks is written (none for a few)."""

    def __init__(self, total: int):
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from indexer.learning.marks import INSERT_CHUNK

        self.progress = Progress(TextColumn("marking"), BarColumn(), MofNCompleteColumn(), transient=True,
                                 console=RichConsole(stderr=True), disable=total <= INSERT_CHUNK)
        self.task = self.progress.add_task("marking", total=total)

    def __enter__(self) -> "_MarkProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total)


@label.command("list")
@archive_option
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def list_labels(archive_dir, as_json):
    """Every label with marks or learned versions."""
    from indexer.learning.marks import label_summaries

    with open_archive(archive_dir, read_only=True) as archive:
        summaries = label_summaries(archive)
    if as_json:
        click.echo(json.dumps([vars(s) for s in summaries], indent=2))
        return
    if not summaries:
        Console().err("No labels yet: mark a search hit with `soundtrace label mark NAME --window ID`.")
    for s in summaries:
        gone = f", {s.unplaced} unplaced (audio no longer indexed)" if s.unplaced else ""
        click.echo(f"{shown(s.label)}: {s.positives} positive, {s.negatives} negative{gone}; {s.versions} learned version(s)")


@label.command()
@click.argument("name")
@archive_option
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def show(name, archive_dir, as_json):
    """A label's marks and its newest learned version."""
    from indexer.errors import MarkError
    from indexer.learning.learned import newest_learned
    from indexer.learning.marks import marks_of

    with open_archive(archive_dir, read_only=True) as archive:
        marks = marks_of(archive, name)
        try:
            learned = newest_learned(archive, name)
        except MarkError:
            learned = None
    if as_json:
        click.echo(json.dumps({"marks": [vars(m) for m in marks], "learned": _learned_dict(learned)}, indent=2, default=str))
        return
    for m in marks:
        where = f"window {m.window_id} ({shown(m.path)} at {format_seconds(m.start_s)})" if m.window_id is not None else \
            f"unplaced (marked as window {m.marked_window_id}; its audio is no longer indexed)"
        note = f" — {shown(m.note)}" if m.note else ""
        click.echo(f"{'✓' if m.positive else '✗'} {where}, {m.marked_at:%Y-%m-%d %H:%M}{note}")
    if learned is None:
        click.echo("Not learned yet.")
    else:
        click.echo(f"Learned version {learned.version}: {learned.positives} positive, {learned.negatives} negative, "
                   f"{learned.weak_negatives} weak negatives (marks {learned.marks_hash}).")


@label.command()
@click.argument("name")
@archive_option
@click.option("--weak-negatives", default=10_000, show_default=True, type=click.IntRange(0, 200_000),
              help="Random unmarked windows taken as down-weighted negatives.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@model_options
def learn(name, archive_dir, weak_negatives, as_json, encoder_config):
    """Fit NAME on its marks (the label's text is the prior) and store it as a new version."""
    from indexer.learning.fit import FitOptions
    from indexer.learning.learned import learn_label

    with open_archive(archive_dir, encoder_config) as archive:
        report = learn_label(archive, name, FitOptions(weak_negatives=weak_negatives))
    learned = report.learned
    if as_json:
        click.echo(json.dumps({**_learned_dict(learned), "unplaced": report.unplaced}, indent=2))
        return
    click.echo(f"{shown(learned.label)!r} version {learned.version}: learned from {learned.positives} positive and "
               f"{learned.negatives} negative mark(s) and {learned.weak_negatives} weak negatives.")
    if report.unplaced:
        click.echo(f"{report.unplaced} mark(s) were left out: their audio is no longer indexed.")
    e = learned.evaluation
    if e is None:
        click.echo("No marks yet: the learned label is the text query.")
    elif e.folds == 0:
        click.echo("Too few marks to cross-validate: mark at least 2 positive and 2 negative windows.")
    else:
        click.echo(f"Cross-validated over the marks ({e.folds} folds)   learned   text alone")
        click.echo(f"  ROC-AUC                                   {_f(e.roc_auc):>7}   {_f(e.text_roc_auc):>10}")
        click.echo(f"  precision at 10                           {_f(e.precision_at_10):>7}   {_f(e.text_precision_at_10):>10}")


@label.command()
@click.argument("name")
@click.option("-k", "k", default=20, show_default=True, type=click.IntRange(1, 1_000), help="Windows to propose.")
@archive_option
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@model_options
def suggest(name, k, archive_dir, as_json, encoder_config):
    """Unmarked windows worth marking next: the best-scoring and the least certain, one per recording."""
    from indexer.learning.suggest import suggest_windows

    with open_archive(archive_dir, encoder_config, read_only=True) as archive:
        suggestions = suggest_windows(archive, name, k)
    if as_json:
        click.echo(json.dumps([vars(s) for s in suggestions], indent=2))
        return
    if not suggestions:
        Console().err("Nothing to propose: the archive holds no unmarked window.")
    for s in suggestions:
        click.echo(f"window {s.window_id}  {s.reason:<6}  {s.score:.3f}  {shown(s.path)}  "
                   f"{format_seconds(s.start_s)}–{format_seconds(s.end_s)}")


def _f(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _learned_dict(learned) -> dict | None:
    if learned is None:
        return None
    return {"label": learned.label, "version": learned.version, "positives": learned.positives,
            "negatives": learned.negatives, "weak_negatives": learned.weak_negatives, "marks_hash": learned.marks_hash,
            "evaluation": learned.evaluation.to_dict() if learned.evaluation else None}
