"""``soundtrace classify FOLDER``: the batch run in a terminal. Rows go to a CSV and/or a JSON array
as each file finishes (so a long run can be watched, and stopped, with what is done kept), the
progress on stderr; a table at the end when neither output is asked for."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import click
from rich.table import Table

from indexer.archive.durable import unwritable_reason
from indexer.cli.index_command import EXIT_SOME_FAILED
from indexer.cli.output import Console, format_seconds, shown
from indexer.cli.progress import IndexProgress
from indexer.config import EncoderConfig

if TYPE_CHECKING:
    from indexer.classify.zero_shot import ClassifyOptions

EXIT_INTERRUPTED = 130


def run_batch(
    paths: Sequence[Path], labels: list[str], config: EncoderConfig, options: ClassifyOptions, csv_out: str | None,
    as_json: bool, quiet: bool,
) -> int:
    """Classify every audio file under ``paths``; the exit status (0, 3 when some failed, 130 when stopped)."""
    from indexer.audio.sources import discover
    from indexer.classify.batch import classify_files
    from indexer.classify.zero_shot import LabelQueries
    from indexer.model.loading import load_encoder

    if csv_out == "-" and as_json:
        raise click.UsageError("--csv - and --json would both write to stdout; give --csv a FILE.")
    _check_csv_target(csv_out)
    console = Console()
    found = discover(paths)
    for problem in found.unlisted_folders:
        console.err(f"could not list folder {problem}")
    if not found.files:
        raise click.ClickException(_no_audio(paths, found.ignored))
    outputs, done, failed = None, 0, 0
    try:
        with IndexProgress(disabled=quiet) as progress:
            progress.stage(f"loading the model {config.model}")
            encoder = load_encoder(config)
            queries = LabelQueries.embed(labels, encoder)  # once for every file
            outputs = _Outputs(console, csv_out, as_json)
            progress.start(len(found.files), sum(f.size_bytes for f in found.files))
            progress.stage("classifying")
            for result in classify_files(found.files, queries, encoder, options):
                outputs.write(result)
                done, failed = done + 1, failed + (not result.ok)
                c = result.classification
                progress.windows_embedded(c.windows if c else 0)
                progress.file_done(result.source.path, "classified" if c else "failed", result.source.size_bytes,
                                   c.duration_s if c else 0.0)
            progress.finish()
    except KeyboardInterrupt:
        kept = outputs.close() if outputs is not None else ""
        console.err(f"Interrupted after {done} of {_files(len(found.files))}{kept}.")
        return EXIT_INTERRUPTED
    kept = outputs.close()
    left_out = f"; left out {_files(found.ignored)} without an audio extension" if found.ignored else ""
    console.err(f"classified {_files(done - failed)}, failed {failed}{left_out}{kept}")
    return EXIT_SOME_FAILED if failed else 0


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def _check_csv_target(csv_out: str | None) -> None:
    """One sentence now, before the model loads, when the CSV could not be written."""
    if csv_out is None or csv_out == "-":
        return
    reason = unwritable_reason(Path(csv_out))
    if reason is not None:
        raise click.ClickException(shown(f"Cannot write the CSV to {csv_out}: {reason}."))


def _no_audio(paths: Sequence[Path], ignored: int) -> str:
    where = ", ".join(shown(p) for p in paths)
    if ignored:
        return (f"No audio files under {where} ({_files(ignored)} without an audio extension left out; "
                "name a file to try it anyway), so nothing was classified.")
    return f"No audio files under {where}, so nothing was classified."


class _Outputs:
    """Where rows go: a CSV (a file opened only once the model is ready, so a run that cannot
    start leaves an existing CSV as it was, or stdout), a JSON array on stdout, else a table."""

    def __init__(self, console: Console, csv_out: str | None, as_json: bool):
        from indexer.classify.batch import COLUMNS

        self.console, self.csv_out = console, csv_out
        self.json_items = 0 if as_json else None
        self.table_rows: list[dict] | None = [] if csv_out is None and not as_json else None
        self.file = self.csv = None
        if csv_out is not None:
            try:
                self.file = sys.stdout if csv_out == "-" else open(Path(csv_out).expanduser(), "w", newline="", encoding="utf-8")
            except OSError as exc:
                raise click.ClickException(f"Cannot write the CSV to {shown(csv_out)} ({exc.strerror or exc}).") from None
            self.csv = csv.DictWriter(self.file, fieldnames=COLUMNS, lineterminator="\n")
            self.csv.writeheader()

    def write(self, result) -> None:
        rows = result.rows()
        if self.csv is not None:
            self.csv.writerows(rows)
            self.file.flush()
        if self.json_items is not None:
            click.echo(("[\n" if self.json_items == 0 else ",\n") + json.dumps(result.to_dict(), indent=2), nl=False)
            self.json_items += 1
        if self.table_rows is not None:
            self.table_rows.extend(rows)

    def close(self) -> str:
        """Finish every output; says where the CSV rows are kept."""
        if self.file is not None and self.file is not sys.stdout:
            self.file.close()
        self.file = None
        if self.json_items is not None:
            click.echo("[]" if self.json_items == 0 else "\n]")
            self.json_items = None
        if self.table_rows:
            for table in _tables(self.table_rows):
                self.console.out.print(table)
            self.table_rows = None
        return f"; rows in {self.csv_out}" if self.csv_out not in (None, "-") else ""


def _tables(rows: list[dict]) -> list[Table]:
    """The classified files (what was heard, where: the highlight, else the best window; the CSV and
    JSON have both), then the failed ones with why; files named from the folder they all share, so
    two ``call.wav`` in two folders stay apart."""
    table = Table(title_justify="left")
    classified = [row for row in rows if row["status"] == "ok"]
    optional = {"detected": any(not row["detected"] for row in classified),  # all "yes" says nothing
                "warning": any(row["warning"] for row in classified)}
    for column in ("file", "label", "score", "conf.", "heard at", *(c for c, shown_ in optional.items() if shown_)):
        figure = column in ("score", "conf.", "heard at")  # never broken across lines
        table.add_column(column, justify="right" if column in ("score", "conf.") else "left", no_wrap=figure,
                         overflow="fold")

    def number(value) -> str:
        return "—" if value is None else f"{value:.3f}"

    def span(start, end) -> str:
        return "" if start is None else f"{format_seconds(start)}–{format_seconds(end)}"

    shared = os.path.commonpath([os.path.dirname(row["file"]) for row in rows])
    failed = Table(title="failed files", title_justify="left")
    failed.add_column("file", overflow="fold", ratio=1)
    failed.add_column("reason", overflow="fold", ratio=3)
    for row in rows:
        name = shown(os.path.relpath(row["file"], shared))
        if row["status"] != "ok":
            failed.add_row(name, shown(row["error"]))
            continue
        table.add_row(
            name, shown(row["best_label"]), "" if row["score"] is None else number(row["score"]), number(row["confidence"]),
            span(row["highlight_start_s"], row["highlight_end_s"]) or span(row["best_start_s"], row["best_end_s"]),
            *(["yes" if row["detected"] else ""] if optional["detected"] else []), *([shown(row["warning"])] if optional["warning"] else []),
        )
    return [t for t in (table, failed) if t.row_count]
