"""``soundtrace classify``: the origin tool's zero-shot labels, no archive: one file as a table, or
folders in batch (a row per file, streamed to CSV or JSON, with a progress bar)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

from indexer.cli.classify_batch import run_batch
from indexer.cli.options import collect, file_model_options, max_duration_option, raw_options
from indexer.cli.output import Console, print_classification, shown
from indexer.config import DecodeOptions, WindowConfig


@dataclass(frozen=True)
class ClassifyRequest:
    labels: str | None
    label_list: tuple[str, ...]
    multi_label: bool
    threshold: float
    min_score: float | None
    min_confidence: float | None
    window_s: float
    highlight: bool
    as_json: bool
    csv_out: str | None
    quiet: bool

    def label_names(self) -> list[str]:
        from indexer.label_names import parse_labels

        if not self.labels and not self.label_list:
            raise click.UsageError("Give labels with --labels \"a, b, c\" or --label.")
        return parse_labels([*self.label_list, *(parse_labels(self.labels) if self.labels else [])])


@click.command(epilog=(
    "One FILE prints a table (or --json). Folders, several paths or --csv classify in batch: every audio file "
    "under them, a row per file (per detected label with --multi-label) with file, best_label, score, "
    "probability, confidence, detected, highlight, best window, duration, and status/error for files that "
    "fail. Exit status: 0; 3 when the batch finished but some files failed; 1 when it could not run; 2 for "
    "a usage error."
))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--labels", default=None, help="Comma-separated labels, any language; quote a label to keep its commas.")
@click.option("--label", "label_list", multiple=True, help="One label (repeatable); commas are kept.")
@click.option("--multi-label", is_flag=True, help="Report every label whose score reaches --threshold.")
@click.option("--threshold", default=0.3, show_default=True, type=float, help="Cosine score a label needs in --multi-label mode.")
@click.option("--min-score", default=None, type=float, help="Hide labels scoring below this cosine score.")
@click.option("--min-confidence", default=None, type=click.FloatRange(0, 1),
              help="Confidence (0–1) a label needs to be detected (an alert); a lone label has no rival and is not held to it.")
@click.option("--window", "window_s", type=float, default=10.0, show_default=True, help="Window length in seconds.")
@click.option("--highlight/--no-highlight", default=True, show_default=True,
              help="Refine each detected label's best window to the 1–3 s that matter (a few more embeddings).")
@click.option("--json", "as_json", is_flag=True, help="JSON output (in batch: an array, one object per file).")
@click.option("--csv", "csv_out", default=None, metavar="FILE",
              help="Batch: write the rows to FILE as they come (- for stdout).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar (batch).")
@collect(ClassifyRequest)
@max_duration_option
@raw_options
@file_model_options
def classify(paths, request: ClassifyRequest, max_duration_s, raw, encoder_config):
    """Zero-shot classify audio against labels, no archive needed: one FILE, or every audio file
    under the folders in PATHS."""
    from indexer.classify.zero_shot import ClassifyOptions, classify_file
    from indexer.model.loading import load_encoder

    r = request
    names = r.label_names()
    for path in paths:
        if not path.is_symlink() and not path.exists():
            raise click.BadParameter(shown(f"{path} does not exist."), param_hint="PATH")
    try:
        windows = WindowConfig(length_s=r.window_s, hop_s=r.window_s)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--window") from None
    options = ClassifyOptions(
        windows=windows, decode=DecodeOptions(raw=raw, max_duration_s=max_duration_s),
        multi_label=r.multi_label, threshold=r.threshold, min_score=r.min_score, min_confidence=r.min_confidence,
        highlight=r.highlight,
    )
    config = encoder_config.or_default_model()
    if len(paths) > 1 or paths[0].is_dir() or r.csv_out is not None:
        status = run_batch(paths, names, config, options, r.csv_out, r.as_json, r.quiet)
        if status:
            raise SystemExit(status)
        return
    file = paths[0]
    if not file.is_file():
        raise click.BadParameter(shown(f"{file} is not a file."), param_hint="PATH")
    result = classify_file(file, names, load_encoder(config), options)
    if r.as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_classification(Console(), result, r.multi_label or r.min_confidence is not None)
