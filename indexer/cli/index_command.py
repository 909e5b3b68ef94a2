"""``soundtrace index``: embed every recording under the given paths once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from indexer.cli.options import (
    archive_option,
    check_model_folder,
    collect,
    model_options,
    raw_options,
    ray_options,
)
from indexer.cli.output import Console, print_index_report
from indexer.cli.progress import IndexProgress
from indexer.config import DecodeOptions, WindowConfig, default_archive_dir


@dataclass(frozen=True)
class IndexRequest:
    metadata_files: tuple[Path, ...]
    channels: str | None
    window_s: float | None
    hop_s: float | None
    prune: bool
    retry_failed: bool
    audit_files: tuple[Path, ...]
    quiet: bool
    engine: str
    decoders: int | None

    def windows(self) -> WindowConfig | None:
        """The window settings asked for (a new archive's), or None to keep the archive's own."""
        if self.window_s is None and self.hop_s is None:
            return None
        length = self.window_s or 10.0
        try:
            return WindowConfig(length_s=length, hop_s=self.hop_s or length)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None


EXIT_SOME_FAILED = 3
"""The run finished and recorded every file, but some failed (their reasons are printed)."""


@click.command(epilog=(
    "Exit status: 0 when every file was indexed or unchanged; 3 when the run finished but some files "
    "failed (the table lists them and why); 1 when the run could not proceed; 2 for a usage error."
))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@archive_option
@click.option("--metadata", "metadata_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV of per-recording metadata (a path or file column plus any others); repeatable.")
@click.option("--channels", type=click.Choice(["mix", "split"]), default=None,
              help="mix: downmix to mono; split: index each channel as its own stream (agent vs customer) "
                   "[default: the archive's own, mix for a new one].")
@click.option("--window", "window_s", type=float, default=None, help="Window length in seconds, for a new archive [default: 10].")
@click.option("--hop", "hop_s", type=float, default=None, help="Hop between windows in seconds [default: the window length].")
@click.option("--prune", is_flag=True, help="Drop recordings under PATHS whose files are gone.")
@click.option("--retry-failed", is_flag=True, help="Try again files that failed before, even if unchanged.")
@click.option("--audit", "audit_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Label set YAML to keep standing: run now if new, then extended by every indexing run; repeatable.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: decode and embed here; ray: on a Ray cluster (pip install 'soundtrace[ray]'), same archive.")
@click.option("--decoders", type=click.IntRange(1, 256), default=None,
              help="Decoding processes (local engine) [default: the machine's cores minus one, at least two]; the archive is the same whatever the number.")
@collect(IndexRequest)
@raw_options
@ray_options
@model_options
def index(paths, archive_dir, request: IndexRequest, raw, ray, encoder_config):
    """Embed every recording under PATHS once (unchanged files are skipped)."""
    from indexer.api import Archive
    from indexer.archive.manifest import MANIFEST_FILE
    from indexer.archive.metadata import check_csv
    from indexer.audio.sources import check_paths
    from indexer.audit.labelset_yaml import load_labelset
    from indexer.audit.runner import start_standing_audit
    from indexer.indexing.pipeline import IndexOptions

    directory = (archive_dir or default_archive_dir()).expanduser()
    windows = request.windows()
    check_paths(paths)  # a run that cannot start creates nothing: all checked before the archive exists
    for csv_path in request.metadata_files:
        check_csv(csv_path)
    labelsets = [load_labelset(f) for f in request.audit_files]
    if request.engine == "ray":
        from indexer.indexing.ray_engine import require_ray

        require_ray()  # one sentence on how to install it, before anything is created
    Archive.check_no_writer(directory)  # refuse before the model loads, not after
    is_new = not (directory / MANIFEST_FILE).exists()
    with IndexProgress(disabled=request.quiet) as progress:
        if is_new:  # a new archive records its model's identity, so the model loads first
            from indexer.model.loading import load_encoder

            config = encoder_config.or_default_model()
            progress.stage(f"loading the model {config.model} to start a new archive at {directory}")
            encoder = load_encoder(config)
        else:  # loaded only when a file needs it: a re-run over unchanged files loads no model
            encoder = None
            from indexer.archive.manifest import Manifest

            check_model_folder(Manifest.load(directory.resolve()), encoder_config.model)
        with Archive.open(directory, encoder=encoder, encoder_config=encoder_config, create=True, windows=windows) as archive:
            options = IndexOptions(
                decode=DecodeOptions(channels=request.channels, raw=raw), prune=request.prune,
                retry_failed=request.retry_failed, metadata=request.metadata_files, engine=request.engine, ray=ray,
                decoders=request.decoders,
            )
            report = archive.index(paths, options, progress)
            started = (start_standing_audit(archive, labelset) for labelset in labelsets)
            report.audits += [update for update in started if update is not None]
    print_index_report(Console(), report)
    if report.failed:
        raise SystemExit(EXIT_SOME_FAILED)
