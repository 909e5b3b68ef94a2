"""The ``soundtrace`` command line: the only module that knows click and rich.

It builds typed configuration from flags, calls the engine, and turns the engine's typed errors
into one sentence on stderr with a non-zero exit code.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Callable

import click

from .config import REQUEST_MAX_DURATION_S, DecodeOptions, EncoderConfig, RawPcmFormat, WindowConfig, default_archive_dir
from .cli_audit import audit
from .cli_options import archive_option, model_options, open_archive
from .errors import SoundtraceError
from .output import (
    Console,
    IndexProgress,
    print_classification,
    print_hits,
    print_index_report,
    print_info,
)


class _Group(click.Group):
    """Typed engine errors become one clear sentence and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SoundtraceError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted; the archive is consistent — run the same command again to resume.", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="soundtrace", prog_name="soundtrace")
def cli() -> None:
    """Semantic search and auditing over audio archives with LAION's CLAP.

    Index recordings once, then ask in plain words: soundtrace finds where in which recording
    it happens.
    """


def _raw_options(func: Callable) -> Callable:
    @click.option("--raw-rate", type=int, default=None, help="Sample rate of headerless .raw/.pcm files.")
    @click.option("--raw-channels", type=int, default=1, show_default=True, help="Channels of headerless raw files.")
    @click.option("--raw-format", type=click.Choice(["s16le", "s16be", "s24le", "s32le", "f32le", "u8"]), default="s16le", show_default=True)
    @functools.wraps(func)
    def wrapper(*args, raw_rate, raw_channels, raw_format, **kwargs):
        kwargs["raw"] = RawPcmFormat(raw_rate, raw_channels, raw_format) if raw_rate else None
        return func(*args, **kwargs)

    return wrapper


def _max_duration_option(func: Callable) -> Callable:
    return click.option(
        "--max-duration", "max_duration_s", type=click.FloatRange(min=1), default=REQUEST_MAX_DURATION_S,
        show_default=True, help="Seconds of audio one file may hold; longer files (or lying headers) are refused.",
    )(func)


def _with_default_model(config: EncoderConfig) -> EncoderConfig:
    return config if config.model else dataclasses.replace(config, model=EncoderConfig().model)


# --- index -----------------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@archive_option
@click.option("--metadata", "metadata_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of per-recording metadata (a path or file column plus any others); repeatable.")
@click.option("--channels", type=click.Choice(["mix", "split"]), default="mix", show_default=True,
              help="mix: downmix to mono; split: index each channel as its own stream (agent vs customer).")
@click.option("--window", "window_s", type=float, default=None, help="Window length in seconds, for a new archive [default: 10].")
@click.option("--hop", "hop_s", type=float, default=None, help="Hop between windows in seconds [default: the window length].")
@click.option("--prune", is_flag=True, help="Drop recordings under PATHS whose files are gone.")
@click.option("--retry-failed", is_flag=True, help="Try again files that failed before, even if unchanged.")
@click.option("--audit", "audit_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Label set YAML to keep standing: run now if new, then extended by every indexing run; repeatable.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_raw_options
@model_options
def index(paths, archive_dir, metadata_files, channels, window_s, hop_s, prune, retry_failed, audit_files, quiet, raw, encoder_config):
    """Embed every recording under PATHS once (unchanged files are skipped)."""
    from .archive import Archive
    from .audit import start_standing_audit
    from .encoder import load_encoder
    from .labelset import load_labelset
    from .pipeline import IndexOptions

    directory = (archive_dir or default_archive_dir()).expanduser()
    windows = None
    if window_s is not None or hop_s is not None:
        length = window_s or 10.0
        try:
            windows = WindowConfig(length_s=length, hop_s=hop_s or length)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    Archive.check_no_writer(directory)  # refuse before the model loads, not after
    is_new = not (directory / "manifest.json").exists()
    encoder = load_encoder(_with_default_model(encoder_config)) if is_new or encoder_config.model else None
    console = Console()
    with Archive.open(directory, encoder=encoder, encoder_config=encoder_config, create=True, windows=windows) as archive:
        options = IndexOptions(
            decode=DecodeOptions(channels=channels, raw=raw), prune=prune, retry_failed=retry_failed,
            metadata=tuple(metadata_files),
        )
        labelsets = [load_labelset(f) for f in audit_files]  # invalid label sets fail before any work
        with IndexProgress(disabled=quiet) as progress:
            report = archive.index(paths, options, progress)
        started = (start_standing_audit(archive, labelset) for labelset in labelsets)
        report.audits += [update for update in started if update is not None]
    print_index_report(console, report)


# --- search ----------------------------------------------------------------------------------


@cli.command()
@click.argument("text", required=False)
@archive_option
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 10_000), help="Recordings to return.")
@click.option("--like", "like", default=None, help="Query by example: FILE or FILE:START-END (seconds).")
@click.option("--like-window", type=int, default=None, help="Query by an indexed window id (more like this).")
@click.option("--where", default=None, help="Boolean filter over metadata columns, e.g. \"agent = 'A17' and site = 'north'\".")
@click.option("--since", default=None, help="Only recordings dated on or after YYYY-MM-DD.")
@click.option("--until", default=None, help="Only recordings dated on or before YYYY-MM-DD.")
@click.option("--date-column", default=None, help="Column --since/--until compare [default: metadata 'date', else file time].")
@click.option("--windows", "per_recording", default=3, show_default=True, type=click.IntRange(1, 100), help="Hit windows listed per recording.")
@click.option("--refine", "refine_top", type=int, default=0, show_default=True,
              help="Refine the N best hits to the 1–3 s that matter most (runs the audio model on them).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV output.")
@_max_duration_option
@_raw_options
@model_options
def search(text, archive_dir, k, like, like_window, where, since, until, date_column, per_recording, refine_top, as_json, as_csv,
           max_duration_s, raw, encoder_config):
    """Find where TEXT happens across the archive (or what sounds like a clip)."""
    from .search import SearchFilters, clip_query, parse_clip_spec, search_vector, text_query, window_query

    if sum(x is not None for x in (text, like, like_window)) != 1:
        raise click.UsageError("Give exactly one of TEXT, --like or --like-window.")
    filters = SearchFilters(where=where, since=since, until=until, date_column=date_column)
    with open_archive(archive_dir, encoder_config, read_only=True) as archive:
        exclude = frozenset()
        if text is not None:
            query = text_query(archive, text)
        elif like is not None:
            query, exclude = clip_query(archive, parse_clip_spec(like), DecodeOptions(raw=raw, max_duration_s=max_duration_s))
        else:
            query, exclude = window_query(archive, like_window)
        hits = search_vector(archive, query, k, filters, per_recording, exclude=exclude)
        highlights = {}
        if refine_top:
            from .highlight import refine_hits

            highlights = refine_hits(archive, hits, query, top=refine_top, skip_unreadable=True)
    if as_json:
        click.echo(json.dumps([_with_highlight(h.to_dict(), highlights.get(h.recording_id)) for h in hits], indent=2, default=str))
    elif as_csv:
        _write_hits_csv([_with_highlight(h.to_dict(), highlights.get(h.recording_id)) for h in hits])
    else:
        print_hits(Console(), hits, text or like or f"window {like_window}", highlights)


def _with_highlight(row: dict, spot) -> dict:
    if spot is not None:
        row.update(highlight_start_s=spot.start_s, highlight_end_s=spot.end_s, highlight_score=spot.score)
    return row


def _write_hits_csv(rows: list[dict]) -> None:
    for row in rows:
        row["windows"] = ";".join(f"{w['start_s']:g}-{w['end_s']:g}" for w in row["windows"])
    fields = list(dict.fromkeys(key for row in rows for key in row)) or ["rank", "score", "path", "start_s", "end_s"]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


# --- classify ----------------------------------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--labels", default=None, help="Comma-separated labels, any language; quote a label to keep its commas.")
@click.option("--label", "label_list", multiple=True, help="One label (repeatable); commas are kept.")
@click.option("--multi-label", is_flag=True, help="Report every label whose score reaches --threshold.")
@click.option("--threshold", default=0.3, show_default=True, type=float, help="Cosine score a label needs in --multi-label mode.")
@click.option("--min-score", default=None, type=float, help="Hide labels scoring below this cosine score.")
@click.option("--window", "window_s", type=float, default=10.0, show_default=True, help="Window length in seconds.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@_max_duration_option
@_raw_options
@model_options
def classify(file, labels, label_list, multi_label, threshold, min_score, window_s, as_json, max_duration_s, raw, encoder_config):
    """Zero-shot classify one FILE against labels, no archive needed."""
    from .classify import classify_file
    from .encoder import load_encoder

    from .labels import parse_labels

    if not labels and not label_list:
        raise click.UsageError("Give labels with --labels \"a, b, c\" or --label.")
    if not file.is_file():
        raise click.BadParameter(f"{file} does not exist.", param_hint="FILE")
    names = parse_labels([*label_list, *(parse_labels(labels) if labels else [])])
    encoder = load_encoder(_with_default_model(encoder_config))
    result = classify_file(
        file, names, encoder, WindowConfig(length_s=window_s, hop_s=window_s), DecodeOptions(raw=raw, max_duration_s=max_duration_s),
        multi_label=multi_label, threshold=threshold, min_score=min_score,
    )
    if as_json:
        payload = {
            "file": str(result.path), "duration_s": result.duration_s, "sample_rate": result.info.sample_rate,
            "channels": result.info.channels, "format": result.info.format, "warnings": result.warnings,
            "labels": [
                {**vars(s), "confidence_level": s.confidence_level} for s in result.labels
            ],
        }
        click.echo(json.dumps(payload, indent=2))
    else:
        print_classification(Console(), result, multi_label)


# --- info --------------------------------------------------------------------------------------


@cli.command()
@archive_option
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def info(archive_dir, as_json):
    """What the archive holds: recordings, hours, windows, failures, model, index, size."""
    from .archive import Archive

    directory = archive_dir or default_archive_dir()
    with Archive.open(directory, read_only=True) as archive:
        details = archive.info()
    if as_json:
        payload = {k: v for k, v in vars(details).items() if k != "failures"}
        payload["failures"] = [vars(f) for f in details.failures]
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        print_info(Console(), details)


cli.add_command(audit)


@cli.command()
@archive_option
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535), help="Port to serve on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; the default keeps it on this machine.")
def app(archive_dir, port, host):
    """Start the Streamlit app (search, audits, dashboards, classify, library) in the browser."""
    import importlib.util
    import os
    import subprocess

    if importlib.util.find_spec("streamlit") is None:
        raise click.ClickException("The app needs Streamlit: pip install 'soundtrace[app]'.")
    from search_app.launch import command

    directory = (archive_dir or default_archive_dir()).expanduser().resolve()
    click.echo(f"soundtrace app on http://{host}:{port} (archive {directory}); Ctrl-C stops it", err=True)
    raise SystemExit(subprocess.call(command(directory, port, host), env={**os.environ, "SOUNDTRACE_ARCHIVE": str(directory)}))


def main() -> None:
    cli(prog_name="soundtrace")



if __name__ == "__main__":
    main()
