"""Terminal rendering for the CLI (rich): tables, the indexing progress bar, summaries."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console as RichConsole
from rich.table import Table
from rich.text import Text

from indexer.archive.metadata import output_name

MAX_METADATA_COLUMNS = 4


def format_seconds(seconds: float) -> str:
    """12.5 -> '0:12.5', 3725 -> '1:02:05.0': what a person reads off a player."""
    seconds = max(0.0, float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{int(hours)}:{int(minutes):02d}:{secs:04.1f}"
    return f"{int(minutes)}:{secs:04.1f}"


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), *range(127, 160)]} | {10: "\\n", 9: "\\t", 13: "\\r"}
"""C0 controls (ESC among them), DEL and the C1 controls (U+009B is CSI on its own)."""


def shown(value) -> str:
    """Data (a file name, a reason, a metadata value, a label) as terminal text: control characters
    escaped, so a name holding ESC or a newline cannot move the cursor or forge a line. Every line
    and table cell of the CLI holding such text goes through it (``--csv``/``--json`` keep the data
    as is). Consoles print with markup off, so brackets in names are text too."""
    return "" if value is None else str(value).translate(_CONTROL)


class Console:
    """stdout for results, stderr for everything about the run."""

    def __init__(self) -> None:
        self.out = RichConsole(highlight=False, markup=False)
        self.error = RichConsole(stderr=True, highlight=False, markup=False)

    def err(self, message: str) -> None:
        self.error.print(shown(message), soft_wrap=True)  # a sentence is never broken mid-command


# --- indexing ----------------------------------------------------------------------------------


def print_index_report(console: Console, report) -> None:
    for csv_path, rows in report.metadata_rows:
        console.err(f"metadata: {rows} rows from {csv_path}")
    for problem in report.unlisted_folders:
        console.err(f"could not list folder {problem}")
    if report.discovered == 0:
        console.err(
            "found no audio files to index" + (f" ({report.ignored} files without an audio extension were left out;"
                                               " name a file to try it anyway)" if report.ignored else "")
        )
    elif report.ignored:
        console.err(f"left out {report.ignored} files without an audio extension (name a file to try it anyway)")
    speed = report.audio_seconds / report.elapsed_s if report.elapsed_s else 0.0
    work = (f"{report.windows_added} windows, {report.audio_seconds / 3600:.2f} h audio in {report.elapsed_s:.1f} s "
            f"({report.windows_per_second:.1f} windows/s, {speed:.0f}x real time)" if report.windows_added else
            f"nothing new to embed ({report.elapsed_s:.1f} s)")
    console.err(
        f"indexed {report.indexed}, unchanged {report.unchanged}, reused {report.reused} (same content), "
        f"failed {len(report.failed)}, pruned {report.pruned} — {work}"
    )
    if report.marks_unplaced:
        console.err(f"{report.marks_unplaced} label mark(s) now point at audio no longer indexed (changed or removed "
                    "files); they are kept and come back if that audio is indexed again (soundtrace label list)")
    for update in report.audits:
        console.err(
            f"audit {update.run_id} ({update.name}): {update.recordings_scored} recordings scored, "
            f"{len(update.new_flags)} new flags" + (f", {update.cleared} cleared" if update.cleared else "")
            + (f"; it replaces standing run {', '.join(map(str, update.replaced))} (an earlier version of its label set)"
               if update.replaced else "")
        )
        for path, label, score, start in update.new_flags[:20]:
            console.err(f"  {label}: {Path(path).name} at {format_seconds(start)} (score {score:.3f})")
    for note in report.notes:
        console.err(note)
    if report.failed:
        console.error.print(_failure_table(report.failed))


def _failure_table(failures) -> Table:
    """File name first (what a person scans for), then why, then the folder it is in."""
    table = Table(title="failed files", title_justify="left", show_lines=False)
    table.add_column("file", overflow="fold", ratio=2)
    table.add_column("reason", overflow="fold", ratio=4)
    table.add_column("folder", overflow="fold", ratio=2)
    for failure in failures:
        path = Path(failure.path)
        table.add_row(shown(path.name), shown(failure.reason), shown(path.parent))
    return table


# --- search --------------------------------------------------------------------------------------


def _metadata_columns(hits) -> list[str]:
    """User metadata columns worth a table column: present and not all empty."""
    names: list[str] = []
    for hit in hits:
        for key, value in hit.metadata.items():
            if value is not None and key not in names:
                names.append(key)
    return names[:MAX_METADATA_COLUMNS]


SHORT_VALUE = 12
"""Metadata values up to this long (a date, an agent id, a site) are never broken across lines."""


def fitted_width(values) -> int:
    """A column's width at least: its longest value (or header) up to ``SHORT_VALUE``."""
    return min(SHORT_VALUE, max((len(v) for v in values), default=1))


def _fitting(console: Console, own_width: int, columns: dict[str, int]) -> list[str]:
    """The metadata columns (name -> minimum width) that fit beside the table's own columns
    (``own_width`` characters at least), in order; ``--csv``/``--json`` have them all."""
    room, chosen = console.out.width - own_width, []
    for name, width in columns.items():
        if width + 3 > room:
            break
        chosen.append(name)
        room -= width + 3
    return chosen


def _span(spot) -> str:
    return "" if spot is None else f"{format_seconds(spot.start_s)}–{format_seconds(spot.end_s)}"


def empty_archive_message(directory) -> str:
    return (
        f"The archive at {directory} holds no recordings yet, so nothing can match; fill it with "
        f"`soundtrace index FOLDER --archive {directory}`."
    )


def channel_mark(channel: int, split_channels: bool) -> str:
    """' ch1' after a time when the archive keeps channels apart; nothing when it mixes them."""
    return f" ch{channel}" if split_channels else ""


def window_place(window, split_channels: bool) -> str:
    """'0:10.0–0:20.0', with the channel when the archive keeps channels apart ('… ch1')."""
    return f"{format_seconds(window.start_s)}–{format_seconds(window.end_s)}{channel_mark(window.channel, split_channels)}"


def print_hits(console: Console, hits, query: str, highlights: dict | None = None, split_channels: bool = False) -> None:
    """One row per recording; the best window's id is what ``label mark --window`` and
    ``search --like-window`` take; metadata columns are headed ``meta.<column>``."""
    if not hits:
        console.err(f"No recordings match {query!r} with these filters.")
        return
    others = [", ".join(format_seconds(w.start_s) + channel_mark(w.channel, split_channels) for w in hit.windows[1:])
              for hit in hits]
    own_width = 4 + 8 + 17 + (19 if split_channels else 16) + 10 + (16 if highlights else 0) + (11 if any(others) else 0)
    widths = {name: fitted_width([shown(output_name(name))] + [shown(hit.metadata.get(name)) for hit in hits])
              for name in _metadata_columns(hits)}
    meta = _fitting(console, own_width, widths)
    table = Table(title=shown(f"{len(hits)} recordings for {query!r}"), title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("recording", overflow="fold")  # (rich's min_width would defeat its shrinking to fit)
    table.add_column("best time", no_wrap=True)
    table.add_column("window", justify="right", no_wrap=True)
    for name in meta:
        short = all(len(shown(hit.metadata.get(name))) <= SHORT_VALUE for hit in hits)
        table.add_column(shown(output_name(name)), no_wrap=short, overflow="ellipsis" if short else "fold")
    if highlights:
        table.add_column("highlight", no_wrap=True)
    if any(others):
        table.add_column("also at", overflow="fold")
    for hit, also in zip(hits, others):
        table.add_row(
            str(hit.rank), f"{hit.score:.3f}", shown(Path(hit.path).name), window_place(hit.best, split_channels),
            str(hit.best.window_id), *[shown(hit.metadata.get(name)) for name in meta],
            *([_span(highlights.get(hit.recording_id))] if highlights else []), *([also] if any(others) else []),
        )
    console.out.print(table)


# --- classify ------------------------------------------------------------------------------------


def print_classification(console: Console, result, multi_label: bool) -> None:
    info = result.info
    console.out.print(Text.assemble(
        (shown(result.path.name), "bold"),
        shown(f"  {info.format}, {info.sample_rate} Hz, {info.channels} ch, {format_seconds(result.duration_s)}"),
    ))
    for warning in result.warnings:
        console.out.print(Text.assemble(("warning:", "yellow"), shown(f" {warning}")))
    table = Table(title_justify="left")
    for column in ("label", "score", "probability", "confidence", "best window", "highlight", "detected" if multi_label else "top"):
        table.add_column(column, justify="left" if column in ("label", "best window", "highlight") else "right")
    for s in result.labels:
        probability = "—" if s.probability is None else f"{s.probability:.3f}"
        confidence = f"— ({s.confidence_level})" if s.confidence is None else f"{s.confidence:.2f} ({s.confidence_level})"
        table.add_row(
            shown(s.label), f"{s.score:.3f}", probability, confidence,
            f"{format_seconds(s.best_start_s)}–{format_seconds(s.best_end_s)}",
            f"{format_seconds(s.highlight[0])}–{format_seconds(s.highlight[1])}" if s.highlight else "",
            "yes" if s.detected else "",
        )
    console.out.print(table)
    if len(result.labels) == 1 and result.labels[0].probability is None:
        console.out.print("one label: probability and confidence need a second label to compare with; read the score")


# --- info ----------------------------------------------------------------------------------------


def print_info(console: Console, info, staged: tuple[int, int] = (0, 0)) -> None:
    """``staged``: (shards, bytes) a Ray run finished but had not committed when it stopped."""
    table = Table(show_header=False, title=shown(f"archive {info.directory}"), title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    rows = [
        ("recordings", f"{info.recordings} indexed, {info.failed} failed"),
        ("audio", f"{info.hours:.2f} h"),
        ("windows", f"{info.windows} ({info.window_s:g} s, hop {info.hop_s:g} s); {info.vectors} vectors in the index"),
        ("model", shown(f"{info.model_id} (revision {info.revision[:12]}, {info.dim} dims)")),
        ("embedded with", f"{info.precision} on {info.device_kind} in batches of {info.batch_size}" if info.device_kind
         else "not recorded (recorded by the next run that embeds)"),
        ("index", shown(_index_line(info))),
        ("metadata", shown(", ".join(info.metadata_columns)) or "none"),
        ("last indexed", f"{info.last_indexed_at:%Y-%m-%d %H:%M:%S}" if info.last_indexed_at else "never"),
        ("size on disk", format_bytes(info.disk_bytes)),
    ]
    spare = info.reclaimable
    if spare is not None and spare.total_bytes:
        rows.append(("reclaimable", f"{format_bytes(spare.total_bytes)}: {spare.dead_windows} deleted windows' vectors "
                                    f"({format_bytes(spare.vector_bytes)}) and {format_bytes(spare.catalog_bytes)} of free "
                                    "catalog blocks; `soundtrace compact` frees them"))
    if staged[0]:
        rows.append(("staged", f"{staged[0]} finished file(s), {format_bytes(staged[1])}, of an --engine ray run that "
                               "stopped before committing them; the next `index --engine ray` commits them"))
    for row in rows:
        table.add_row(*row)
    console.out.print(table)
    if info.failures:
        console.out.print(_failure_table(info.failures[:50]))
        if len(info.failures) > 50:
            console.out.print(f"... and {len(info.failures) - 50} more (soundtrace info --json lists all)")


def _index_line(info) -> str:
    if info.ann is None:
        return "exact scan of the float16 vectors (an ANN index is built once the archive is large enough)"
    a = info.ann
    line = (f"{a.factory}, nprobe {a.nprobe}, {a.candidates} candidates re-scored: recall {a.recall:.3f} of the exact top {a.recall_depth} "
            f"against the exact scan, {a.p50_ms:.1f} ms p50 / {a.p95_ms:.1f} ms p95 ({a.queries} queries, built {a.built_at})")
    behind = info.windows - a.windows
    return line + (f"; {behind} newer windows scanned exactly" if behind > 0 else "")


# --- audits --------------------------------------------------------------------------------------


def print_runs(console: Console, runs) -> None:
    if not runs:
        console.err("No audit runs yet: soundtrace audit run LABELS.yaml")
        return
    table = Table(title="audit runs", title_justify="left")
    for column in ("id", "name", "mode", "labels", "windows", "standing", "when"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(str(run.id), shown(run.name), shown(run.mode), shown(", ".join(run.labels)), str(run.windows_scored),
                      "yes" if run.standing else "", f"{run.created_at:%Y-%m-%d %H:%M}")
    console.out.print(table)


def print_audit_run(console: Console, run, counts, flagged: list[dict], unflagged=()) -> None:
    """The run's header and filters, counts per label, the top flagged recordings, and for each
    label that flagged nothing, why (``audit.explain``)."""
    console.out.print(Text.assemble(
        (shown(f"audit {run.id}: {run.name}"), "bold"),
        shown(f" ({run.mode}, {run.windows_scored} windows, {run.seconds:.2f} s, model {run.model_id})"),
        f"{' — standing' if run.standing else ''}",
        shown("".join(f"; learned {name!r} version {v}" for name, v in run.learned_versions.items())),
    ))
    console.out.print(shown(f"filters: {run.scope.describe() or 'none (the whole archive)'}"))
    table = Table(title_justify="left")
    for column in ("label", "flagged recordings", "flagged time", "best score"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for c in counts:
        table.add_row(shown(c.label), str(c.flagged_recordings), format_seconds(c.flagged_seconds), f"{c.best_score:.3f}")
    console.out.print(table)
    if unflagged:
        console.out.print("nothing flagged:" if not flagged else "labels that flagged nothing:")
        for label in unflagged:
            console.out.print(shown(f"  {label.reason}"), soft_wrap=True)
    if not flagged:
        if not unflagged:
            console.out.print("nothing flagged")
        return
    hits = Table(title="top flagged", title_justify="left")
    for column in ("score", "label", "recording", "best time", "conf.", "pctl", "window"):
        figure = column not in ("label", "recording")  # figures and times are never broken across lines
        hits.add_column(column, no_wrap=figure, overflow="fold", justify="right" if figure and column != "best time" else "left")
    for row in flagged:
        hits.add_row(f"{row['score']:.3f}", shown(row["label"]), shown(Path(row["file"]).name),
                     f"{format_seconds(row['best_start_s'])}–{format_seconds(row['best_end_s'])}",
                     f"{row['confidence']:.2f}", f"{row['percentile']:.1f}", str(row["best_window_id"]))
    console.out.print(hits)


def print_diff(console: Console, change) -> None:
    """Counts and lists over what both runs scored; when their scopes differ, each run's filters
    and how many recordings each scored, so a narrower run's absences are not read as "cleared"."""
    console.out.print(Text(f"audit {change.a.id} → {change.b.id}", style="bold"))
    if not change.same_scope:
        for run, scored in ((change.a, change.scored_a), (change.b, change.scored_b)):
            console.out.print(shown(f"run {run.id} scored {scored} recordings (filters: {run.scope.describe() or 'none'})"))
        console.out.print(f"compared: the {change.compared} recordings both runs scored")
    table = Table(title_justify="left")
    for column in ("label", f"flagged in {change.a.id}", f"flagged in {change.b.id}"):
        table.add_column(column)
    for label, a, b in change.counts:
        table.add_row(shown(label), "—" if a is None else str(a), "—" if b is None else str(b))
    console.out.print(table)
    for title, rows in (("newly flagged", change.newly_flagged), ("cleared", change.cleared)):
        console.out.print(f"{title}: {len(rows)}")
        for path, label, score in rows[:20]:
            console.out.print(shown(f"  {label}: {Path(path).name} ({score:.3f})"))
