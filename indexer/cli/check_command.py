"""``soundtrace check [--repair]``: every byte and invariant of the archive, each problem named."""

from __future__ import annotations

import json
import sys

import click

from indexer.cli.options import archive_option, model_options
from indexer.cli.output import Console, format_bytes, shown
from indexer.cli.progress import IndexProgress, StageBar
from indexer.config import default_archive_dir


@click.command()
@archive_option
@click.option("--repair", is_flag=True, help="Rebuild what can be rebuilt: headers, renamed files, the ANN index, "
              "and the vectors of recordings whose audio is still on disk (embedded again with the archive's model).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@model_options
def check(archive_dir, repair, as_json, quiet, encoder_config):
    """Verify the archive: every vector row against its checksum, the catalog, the ANN index, the manifest.

    Exit code 0 when the archive is whole (after --repair: when nothing is left to do), 1 otherwise.
    """
    from indexer.archive.integrity import check_directory

    directory = (archive_dir or default_archive_dir()).expanduser().resolve()
    quiet = quiet or as_json
    if not repair:
        with StageBar(disabled=quiet) as stage:
            report = check_directory(directory, stage)
        _print(report, None, as_json)
        sys.exit(0 if report.ok else 1)
    from indexer.cli.options import open_archive

    with open_archive(directory, encoder_config) as archive, StageBar(disabled=quiet) as stage, IndexProgress(quiet) as bar:
        outcome = archive.check(repair=True, progress=bar, check_progress=stage)
    _print(outcome.before, outcome, as_json)
    sys.exit(0 if outcome.after is not None and outcome.after.ok and not outcome.to_reindex else 1)


def _print(report, outcome, as_json: bool) -> None:
    if as_json:
        payload = {
            "archive": str(report.directory), "ok": report.ok, "segments": report.segments, "chunks": report.chunks,
            "bytes_read": report.bytes_read, "windows": report.windows, "seconds": round(report.seconds, 3),
            "problems": [vars(p) for p in report.problems],
        }
        if outcome is not None:
            payload["repair"] = {
                "done": outcome.done, "reembedded": outcome.reembedded, "to_reindex": outcome.to_reindex,
                "model_problem": outcome.model_problem,
                "problems_left": [vars(p) for p in (outcome.after.problems if outcome.after else report.problems)],
            }
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    out = Console().out

    def say(text: str) -> None:
        out.print(text, soft_wrap=True)  # a line is never broken mid-path
    say(f"checked {report.segments} vector files ({format_bytes(report.bytes_read)} in {report.chunks:,} chunks), "
                  f"{report.windows:,} windows in {report.seconds:.1f} s")
    if report.ok and (outcome is None or not (outcome.reembedded or outcome.to_reindex)):
        say("the archive is whole")
        return
    for problem in report.problems:
        say(f"✗ {shown(problem.sentence)}")
    if outcome is None:
        return
    for done in outcome.done:
        say(f"✓ {shown(done)}")
    if outcome.reembedded:
        say(f"✓ embedded again: {len(outcome.reembedded)} recordings")
    if outcome.to_reindex:
        why = outcome.model_problem or "their audio is not on disk"
        say(f"recordings to index again ({shown(why)}):")
        for path in outcome.to_reindex:
            say(f"  {shown(path)}")
    left = outcome.after.problems if outcome.after else []
    say("the archive is whole again" if not left and not outcome.to_reindex else
                  f"{len(left)} problems left" + ("" if not left else ": " + "; ".join(shown(p.detail) for p in left)))
