"""The indexing progress display on stderr: what the run is doing before its first file, then a
bar with files, audio hours, windows/s and a byte-based ETA."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console as RichConsole
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from indexer.cli.output import shown


class _Stats:
    def __init__(self) -> None:
        self.files_done = 0
        self.files_total = 0
        self.audio_s = 0.0
        self.windows = 0
        self.started = time.perf_counter()


class _StatsColumn(ProgressColumn):
    def __init__(self, stats: _Stats):
        super().__init__()
        self.stats = stats

    def render(self, task: Task) -> Text:
        s = self.stats
        rate = s.windows / max(time.perf_counter() - s.started, 1e-9)
        return Text(
            f"{s.files_done}/{s.files_total} files · {s.audio_s / 3600:.2f} h audio · {rate:.1f} windows/s",
            style="cyan",
        )


class IndexProgress:
    """A ``ProgressSink``. Stages before the bar (looking for files, loading the model: seconds in
    which a person would otherwise see nothing) are printed as lines; the bar is drawn only when
    some file is to be embedded, so a run over unchanged files draws none."""

    def __init__(self, disabled: bool = False):
        self.stats = _Stats()
        self.disabled = disabled
        self.console = RichConsole(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            _StatsColumn(self.stats), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=disabled, transient=False,
        )
        self.task = None

    def __enter__(self) -> "IndexProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def stage(self, message: str) -> None:
        message = shown(message)  # it may name a folder or a model path
        if self.task is not None:
            self.progress.update(self.task, description=escape(message))  # the bar's column reads markup
        elif not self.disabled:
            self.console.print(f"{message}…", markup=False, soft_wrap=True)  # a line, never broken mid-path

    def start(self, files: int, total_bytes: int) -> None:
        self.stats.files_total = files
        self.stats.started = time.perf_counter()
        if files:
            self.task = self.progress.add_task("indexing", total=max(total_bytes, 1))
            self.progress.start()

    def file_done(self, path: Path, outcome: str, size_bytes: int, audio_s: float) -> None:
        self.stats.files_done += 1
        self.stats.audio_s += audio_s
        if self.task is not None:
            self.progress.advance(self.task, size_bytes)

    def windows_embedded(self, count: int) -> None:
        self.stats.windows += count
        self.progress.refresh()

    def finish(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[0].total)


class StageBar:
    """A bar per stage for work reported as ``(stage, done, total)`` (``soundtrace check``'s
    reading of every vector byte), on stderr; the same call shape as the ANN build's progress."""

    def __init__(self, disabled: bool = False):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(), console=RichConsole(stderr=True, highlight=False), disable=disabled, transient=True,
        )
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.progress.start()
            self.tasks[stage] = self.progress.add_task(stage, total=max(total, 1))
        self.progress.update(self.tasks[stage], completed=done, total=max(total, 1))

    def __enter__(self) -> "StageBar":
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
