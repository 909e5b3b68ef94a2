"""``soundtrace info``, ``compact`` and ``app``: what an archive holds, freeing what it no longer needs, and the
app that browses it."""

from __future__ import annotations

import json

import click

from indexer.cli.options import archive_option, model_options
from indexer.cli.output import Console, print_info, shown
from indexer.config import default_archive_dir


@click.command()
@archive_option
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def info(archive_dir, as_json):
    """What the archive holds: recordings, hours, windows, failures, model, index, size."""
    from indexer.api import Archive
    from indexer.indexing.shards import STAGING_DIR, staged

    directory = archive_dir or default_archive_dir()
    with Archive.open(directory, read_only=True) as archive:
        details = archive.info()
        shards, shard_bytes = staged(archive.directory / STAGING_DIR)
    if as_json:
        payload = {k: v for k, v in vars(details).items() if k not in ("failures", "reclaimable")}
        payload["failures"] = [vars(f) for f in details.failures]
        payload["reclaimable"] = {**vars(details.reclaimable), "total_bytes": details.reclaimable.total_bytes}
        payload.update(staged_shards=shards, staged_bytes=shard_bytes)
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        print_info(Console(), details, (shards, shard_bytes))


@click.command()
@archive_option
def compact(archive_dir):
    """Rewrite the vector files without deleted windows and copy the catalog to its live size.

    Safe to interrupt (the archive stays as it was, or is compacted whole); refused while an
    index run writes. `soundtrace info` shows what it would free.
    """
    from indexer.api import Archive
    from indexer.cli.output import format_bytes
    from indexer.cli.progress import StageBar

    with Archive.open(archive_dir or default_archive_dir()) as archive, StageBar() as progress:
        report = archive.compact(progress)
    click.echo(f"Compacted {report.windows:,} windows: {format_bytes(report.bytes_before)} -> {format_bytes(report.bytes_after)} "
               f"on disk, in {report.seconds:.1f} s.")


@click.command()
@archive_option
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535), help="Port to serve on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; the default keeps it on this machine.")
@model_options
def app(archive_dir, port, host, encoder_config):
    """Start the Streamlit app (search, audits, dashboards, classify, library) in the browser.

    The app becomes this process (the same PID), so Ctrl-C or a SIGTERM to it stops the server.
    """
    import importlib.util
    import os

    if importlib.util.find_spec("streamlit") is None:
        raise click.ClickException("The app needs Streamlit: pip install 'soundtrace[app]'.")
    from search_app.launch import command

    directory = (archive_dir or default_archive_dir()).expanduser().resolve()
    argv = command(directory, port, host, encoder_config)
    click.echo(shown(f"soundtrace app on http://{host}:{port} (archive {directory}); Ctrl-C stops it"), err=True)
    os.execve(argv[0], argv, {**os.environ, "SOUNDTRACE_ARCHIVE": str(directory)})
