"""``soundtrace classify``: the origin tool's zero-shot labels for one file, no archive."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

from indexer.cli.options import collect, file_model_options, max_duration_option, raw_options, with_default_model
from indexer.cli.output import Console, print_classification
from indexer.config import DecodeOptions, WindowConfig


@dataclass(frozen=True)
class ClassifyRequest:
    labels: str | None
    label_list: tuple[str, ...]
    multi_label: bool
    threshold: float
    min_score: float | None
    window_s: float
    highlight: bool
    as_json: bool


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--labels", default=None, help="Comma-separated labels, any language; quote a label to keep its commas.")
@click.option("--label", "label_list", multiple=True, help="One label (repeatable); commas are kept.")
@click.option("--multi-label", is_flag=True, help="Report every label whose score reaches --threshold.")
@click.option("--threshold", default=0.3, show_default=True, type=float, help="Cosine score a label needs in --multi-label mode.")
@click.option("--min-score", default=None, type=float, help="Hide labels scoring below this cosine score.")
@click.option("--window", "window_s", type=float, default=10.0, show_default=True, help="Window length in seconds.")
@click.option("--highlight/--no-highlight", default=True, show_default=True,
              help="Refine each detected label's best window to the 1–3 s that matter (a few more embeddings).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@collect(ClassifyRequest)
@max_duration_option
@raw_options
@file_model_options
def classify(file, request: ClassifyRequest, max_duration_s, raw, encoder_config):
    """Zero-shot classify one FILE against labels, no archive needed."""
    from indexer.label_names import parse_labels
    from indexer.classify.zero_shot import ClassifyOptions, classify_file
    from indexer.model.loading import load_encoder

    r = request
    if not r.labels and not r.label_list:
        raise click.UsageError("Give labels with --labels \"a, b, c\" or --label.")
    if not file.is_file():
        raise click.BadParameter(f"{file} does not exist.", param_hint="FILE")
    names = parse_labels([*r.label_list, *(parse_labels(r.labels) if r.labels else [])])
    encoder = load_encoder(with_default_model(encoder_config))
    options = ClassifyOptions(
        windows=WindowConfig(length_s=r.window_s, hop_s=r.window_s), decode=DecodeOptions(raw=raw, max_duration_s=max_duration_s),
        multi_label=r.multi_label, threshold=r.threshold, min_score=r.min_score, highlight=r.highlight,
    )
    result = classify_file(file, names, encoder, options)
    if r.as_json:
        payload = {
            "file": str(result.path), "duration_s": result.duration_s, "sample_rate": result.info.sample_rate,
            "channels": result.info.channels, "format": result.info.format, "warnings": result.warnings,
            "labels": [{**vars(s), "confidence_level": s.confidence_level} for s in result.labels],
        }
        click.echo(json.dumps(payload, indent=2))
    else:
        print_classification(Console(), result, r.multi_label)
