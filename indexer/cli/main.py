"""The ``soundtrace`` command group: every command, and typed engine errors turned into one
sentence on stderr with a non-zero exit code (never a traceback)."""

from __future__ import annotations

import click

from indexer.errors import SoundtraceError

COMMANDS = ("index", "search", "classify", "info", "check", "compact", "audit", "label", "app")


def _command(name: str) -> click.Command:
    """A command's module, imported when the command runs (or help lists it): a search imports
    what a search needs, not the indexing pipeline, the audits or the app."""
    if name == "index":
        from indexer.cli.index_command import index as command
    elif name == "search":
        from indexer.cli.search_command import search as command
    elif name == "classify":
        from indexer.cli.classify_command import classify as command
    elif name == "info":
        from indexer.cli.archive_commands import info as command
    elif name == "check":
        from indexer.cli.check_command import check as command
    elif name == "compact":
        from indexer.cli.archive_commands import compact as command
    elif name == "audit":
        from indexer.cli.audit_commands import audit as command
    elif name == "label":
        from indexer.cli.label_commands import label as command
    else:
        from indexer.cli.archive_commands import app as command
    return command


class _Group(click.Group):
    """Typed engine errors become one clear sentence and exit code 1, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return _command(name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SoundtraceError as exc:
            from indexer.cli.output import shown

            raise click.ClickException(shown(str(exc))) from None  # a file name may hold control characters
        except OSError as exc:  # a full disk or a permission the engine did not foresee: still one sentence
            from indexer.cli.output import shown

            where = f" at {shown(exc.filename)}" if exc.filename else ""
            raise click.ClickException(f"The system refused a file operation{where} ({exc.strerror or exc}); "
                                       "free space or fix the permissions and run again.") from None
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


def main() -> None:
    cli(prog_name="soundtrace")


if __name__ == "__main__":
    main()
