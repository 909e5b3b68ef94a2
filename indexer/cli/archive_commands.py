"""``soundtrace info`` and ``soundtrace app``: what an archive holds, and the app that browses it."""

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
        payload = {k: v for k, v in vars(details).items() if k != "failures"}
        payload["failures"] = [vars(f) for f in details.failures]
        payload.update(staged_shards=shards, staged_bytes=shard_bytes)
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        print_info(Console(), details, (shards, shard_bytes))


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
