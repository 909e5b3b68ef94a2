"""Queries: words, an example clip (a file or a range of one) or an indexed window, each turned
into one unit vector, with the windows a query by example leaves out (itself and its overlaps)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.audio.sources import path_key
from indexer.config import REQUEST_MAX_DURATION_S, DecodeOptions
from indexer.embedding import DEFAULT_PROMPTS, l2_normalise
from indexer.errors import InputPathError, QueryError
from indexer.session import Session


@dataclass(frozen=True)
class ClipSpec:
    path: Path
    start_s: float | None = None
    end_s: float | None = None


_RANGE = re.compile(r"^(?P<start>\d+(?:\.\d+)?)(?:-(?P<end>\d+(?:\.\d+)?))?$")


def parse_clip_spec(text: str) -> ClipSpec:
    """'calls/0042.wav:30-40' -> the file and the 30–40 s range; a bare path means the whole file."""
    head, sep, tail = text.rpartition(":")
    match = _RANGE.match(tail) if sep else None
    if not match:
        return ClipSpec(Path(text).expanduser())
    start = float(match["start"])
    end = float(match["end"]) if match["end"] else None
    if end is not None and end <= start:
        raise QueryError(f"The range in '{text}' ends before it starts.")
    return ClipSpec(Path(head).expanduser(), start, end)


def text_query(archive: Session, text: str, prompts: Sequence[str] = DEFAULT_PROMPTS) -> np.ndarray:
    if not text or not text.strip():
        raise QueryError("The search text is empty.")
    return archive.embed_text([text.strip()], prompts)[0]


def clip_query(
    archive: Session, clip: ClipSpec, decode: DecodeOptions = DecodeOptions(max_duration_s=REQUEST_MAX_DURATION_S)
) -> tuple[np.ndarray, frozenset[int]]:
    """Query by example: the clip's windows embedded and averaged; the clip's own windows to leave out."""
    from indexer.indexing.one_file import embed_file  # decoding loads only for a query by example

    if not clip.path.is_file():
        raise InputPathError(f"{clip.path} does not exist.")
    offset = clip.start_s or 0.0
    _, embedded = embed_file(clip.path, archive.encoder, archive.manifest.windows, decode, offset, clip.end_s)
    total, count, end = None, 0, offset
    for window, vector in embedded:  # a running sum: memory stays flat however long the clip
        total = vector.astype(np.float64) if total is None else total + vector
        count, end = count + 1, max(end, offset + window.end_s)
    if not count:
        raise QueryError(f"The clip {clip.path.name} holds no audio to search with.")
    return l2_normalise((total / count).astype(np.float32)), _overlapping_windows(archive, clip.path.resolve(), offset, end)


def window_query(archive: Session, window_id: int) -> tuple[np.ndarray, frozenset[int]]:
    """"More like this": an indexed window as the query (no model work); it and its overlaps left out."""
    row = archive.catalog.one("SELECT recording_id, start_s, end_s FROM windows WHERE id = ?", [int(window_id)])
    if row is None:
        raise QueryError(f"There is no window {window_id} in this archive.")
    return archive.window_vectors([int(window_id)])[0], _recording_windows_overlapping(archive, *row)


def _overlapping_windows(archive: Session, path: Path, start_s: float, end_s: float) -> frozenset[int]:
    row = archive.catalog.one("SELECT id FROM recordings WHERE path = ?", [path_key(path)])
    return frozenset() if row is None else _recording_windows_overlapping(archive, row[0], start_s, end_s)


def _recording_windows_overlapping(archive: Session, recording_id: int, start_s: float, end_s: float) -> frozenset[int]:
    rows = archive.catalog.con.execute(
        "SELECT id FROM windows WHERE recording_id = ? AND start_s < ? AND end_s > ?", [recording_id, end_s, start_s]
    ).fetchall()
    return frozenset(int(r[0]) for r in rows)
