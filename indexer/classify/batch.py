"""The origin tool's batch mode: every recording under some folders against one set of labels, no
archive.

Files are found as ``index`` finds them (``audio.sources``: audio extensions, links that loop or
lead nowhere, pipes, names that are not UTF-8), the labels are embedded once, and the files are
classified one after another, each streamed window by window, so memory stays flat however many
or long they are. A file that cannot be classified is a result carrying its reason, and the run
goes on; only a problem that is not the file's (the model, the device) stops it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from indexer.audio.sources import SourceFile, discover, path_text
from indexer.classify.zero_shot import (
    Classification, ClassifyOptions, LabelQueries, LabelScore, classify_file, process_encoder,
)
from indexer.config import DEFAULT_MODEL
from indexer.embedding import Encoder
from indexer.errors import AudioError, InputPathError, SoundtraceError

COLUMNS = (
    "file", "status", "error", "best_label", "score", "probability", "confidence", "detected",
    "highlight_start_s", "highlight_end_s", "best_start_s", "best_end_s", "duration_s", "warning",
)
"""One row per file (per detected label in multi-label mode): the origin tool's batch CSV, plus
where the label scores best, the file's length, why a file failed, and ``warning``: ``silent`` (a
flat line: scores mean nothing) and/or ``clipped``."""


@dataclass(frozen=True)
class FileResult:
    """One file of a batch: its classification, or why there is none."""

    source: SourceFile
    classification: Classification | None = None
    error: str | None = None

    @property
    def file(self) -> str:
        """The file's path as ``index`` records it (absolute, links resolved, non-UTF-8 bytes escaped)."""
        return self.source.key

    @property
    def ok(self) -> bool:
        return self.classification is not None

    def reported(self) -> list[LabelScore]:
        """The labels its rows report: every detected one (exclusive mode: the top one), or the best
        when none is, so each file says how close it came. Labels below the minimum score were
        dropped already, so this can be empty."""
        labels = self.classification.labels if self.classification is not None else []
        return [s for s in labels if s.detected] or labels[:1]

    def to_dict(self) -> dict:
        """For JSON: the file, its status and error, and its classification's facts and labels."""
        facts = {k: v for k, v in self.classification.to_dict().items() if k != "file"} if self.classification else {}
        return {"file": self.file, "status": "ok" if self.ok else "failed", "error": self.error, **facts}

    def rows(self) -> list[dict]:
        """This file's rows, keyed by ``COLUMNS``; ``None`` where a column has no value."""
        base = dict.fromkeys(COLUMNS)
        base["file"] = self.file
        if self.classification is None:
            return [{**base, "status": "failed", "error": self.error}]
        c = self.classification
        flags = [flag for flag, on in (("silent", c.quality.is_silent), ("clipped", c.quality.is_clipped)) if on]
        base.update(status="ok", duration_s=round(c.duration_s, 3), warning=" ".join(flags) or None, detected=False)
        return [{**base, **_label_columns(s)} for s in self.reported()] or [base]


def _label_columns(s: LabelScore) -> dict:
    return {
        "best_label": s.label, "score": round(s.score, 6),
        "probability": None if s.probability is None else round(s.probability, 6),
        "confidence": None if s.confidence is None else round(s.confidence, 6), "detected": s.detected,
        "highlight_start_s": round(s.highlight[0], 3) if s.highlight else None,
        "highlight_end_s": round(s.highlight[1], 3) if s.highlight else None,
        "best_start_s": round(s.best_start_s, 3), "best_end_s": round(s.best_end_s, 3),
    }


def classify_folder(
    paths: Iterable[str | Path], labels: str | Sequence[str], model: str = DEFAULT_MODEL, device: str = "auto",
    options: ClassifyOptions = ClassifyOptions(),
) -> Iterator[FileResult]:
    """The origin tool's batch mode from Python: every audio file under ``paths`` (folders or
    files), one result as each finishes; ``result.rows()`` are the CSV's rows. The model is loaded
    once per process, as ``classify_audio`` loads it."""
    roots = [Path(p).expanduser() for p in paths]
    for root in roots:
        if not os.path.lexists(root):
            raise InputPathError(f"{path_text(root)} does not exist; nothing was classified.")
    sources = discover(roots).files
    return classify_files(sources, labels, process_encoder(model, device), options)


def classify_files(
    sources: Iterable[SourceFile], labels: str | Sequence[str] | LabelQueries, encoder: Encoder,
    options: ClassifyOptions = ClassifyOptions(),
) -> Iterator[FileResult]:
    """Each of ``sources`` (from ``audio.sources.discover``) classified in turn, as it finishes."""
    queries = labels if isinstance(labels, LabelQueries) else LabelQueries.embed(labels, encoder)
    for source in sources:
        yield classify_source(source, queries, encoder, options)


def classify_source(source: SourceFile, queries: LabelQueries, encoder: Encoder, options: ClassifyOptions) -> FileResult:
    if source.problem is not None:
        return FileResult(source, error=source.problem.reason)
    name = path_text(source.path.name)
    try:
        return FileResult(source, classify_file(source.path, queries, encoder, options))
    except AudioError as exc:
        return FileResult(source, error=str(exc))
    except OSError as exc:
        return FileResult(source, error=f"{name} cannot be read ({exc.strerror or exc}).")
    except SoundtraceError:
        raise  # the model or the device, not this file: every other file would fail the same way
    except Exception as exc:  # noqa: BLE001 — a decoder's own bug on one hostile file must not stop the run
        return FileResult(source, error=f"{name} could not be classified ({type(exc).__name__}: {exc}).")
