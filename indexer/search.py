"""Search: a query vector -> the best windows -> ranked recordings with the time of each hit."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np

from .archive import Archive
from .catalog import RECORDING_VIEW
from .config import REQUEST_MAX_DURATION_S, DecodeOptions
from .embedding import DEFAULT_PROMPTS, l2_normalise
from .errors import FilterError, InputPathError, QueryError
from .search_filters import FILTER_MEMORY_LIMIT, SearchFilters, filtered_window_ids_sql, recording_filter
from .file_embedding import embed_file
from .sources import path_text

HIDDEN_COLUMNS = frozenset(
    "id path file_name content_hash size_bytes mtime status error_kind error indexed_at decoder".split()
)
"""Catalog internals left out of a hit's ``metadata`` (they have fields of their own or are noise)."""


@dataclass(frozen=True)
class WindowHit:
    window_id: int
    channel: int
    start_s: float
    end_s: float
    score: float


@dataclass(frozen=True)
class RecordingHit:
    rank: int
    recording_id: int
    path: str
    score: float
    best: WindowHit
    windows: tuple[WindowHit, ...]
    duration_s: float
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "rank": self.rank, "recording_id": self.recording_id, "path": self.path, "score": self.score,
            "start_s": self.best.start_s, "end_s": self.best.end_s, "channel": self.best.channel,
            "window_id": self.best.window_id, "duration_s": self.duration_s,
            "windows": [vars(w) for w in self.windows], **{k: _plain(v) for k, v in self.metadata.items()},
        }


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


# --- entry points ------------------------------------------------------------------------------


def text_query(archive: Archive, text: str, prompts: Sequence[str] = DEFAULT_PROMPTS) -> np.ndarray:
    if not text or not text.strip():
        raise QueryError("The search text is empty.")
    return archive.embed_text([text.strip()], prompts)[0]


def clip_query(
    archive: Archive, clip: ClipSpec, decode: DecodeOptions = DecodeOptions(max_duration_s=REQUEST_MAX_DURATION_S)
) -> tuple[np.ndarray, frozenset[int]]:
    """Query by example: the clip's windows embedded and averaged; the clip's own windows to leave out."""
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


def window_query(archive: Archive, window_id: int) -> tuple[np.ndarray, frozenset[int]]:
    """"More like this": an indexed window as the query (no model work); it and its overlaps left out."""
    row = archive.catalog.one("SELECT recording_id, start_s, end_s FROM windows WHERE id = ?", [int(window_id)])
    if row is None:
        raise QueryError(f"There is no window {window_id} in this archive.")
    return archive.window_vectors([int(window_id)])[0], _recording_windows_overlapping(archive, *row)


def search_text(
    archive: Archive, text: str, k: int = 10, filters: SearchFilters = SearchFilters(),
    prompts: Sequence[str] = DEFAULT_PROMPTS, windows_per_recording: int = 3,
) -> list[RecordingHit]:
    return search_vector(archive, text_query(archive, text, prompts), k, filters, windows_per_recording)


def search_like(
    archive: Archive, clip: ClipSpec, k: int = 10, filters: SearchFilters = SearchFilters(),
    decode: DecodeOptions = DecodeOptions(max_duration_s=REQUEST_MAX_DURATION_S), windows_per_recording: int = 3,
) -> list[RecordingHit]:
    query, exclude = clip_query(archive, clip, decode)
    return search_vector(archive, query, k, filters, windows_per_recording, exclude=exclude)


def search_window(
    archive: Archive, window_id: int, k: int = 10, filters: SearchFilters = SearchFilters(),
    windows_per_recording: int = 3,
) -> list[RecordingHit]:
    query, exclude = window_query(archive, window_id)
    return search_vector(archive, query, k, filters, windows_per_recording, exclude=exclude)


def search_vector(
    archive: Archive, query: np.ndarray, k: int = 10, filters: SearchFilters = SearchFilters(),
    windows_per_recording: int = 3, exclude: frozenset[int] = frozenset(),
) -> list[RecordingHit]:
    """Top ``k`` recordings by their best window, each with up to ``windows_per_recording`` windows."""
    if k < 1:
        raise QueryError("k must be at least 1.")
    allowed = allowed_window_ids(archive, filters)
    available = len(archive.store) if allowed is None else len(allowed)
    fetch = min(available, max(32, k * windows_per_recording * 4))
    grouped: dict[int, list[tuple[int, float]]] = {}
    while fetch > 0:
        scores, ids = archive.store.search(query, fetch + len(exclude), allowed)
        grouped = _group(archive, ids[0], scores[0], exclude)
        if len(grouped) >= k or fetch >= available:
            break
        fetch = min(available, fetch * 4)
    return _hits(archive, grouped, k, windows_per_recording)


# --- filters -----------------------------------------------------------------------------------


def allowed_window_ids(archive: Archive, filters: SearchFilters) -> np.ndarray | None:
    """Window ids of the recordings passing the filters, or None when nothing is filtered."""
    where = recording_filter(archive.catalog, filters)
    if where is None:
        return None
    try:
        with archive.catalog.memory_limit(FILTER_MEMORY_LIMIT):
            result = archive.catalog.con.execute(filtered_window_ids_sql(where), list(where.params)).fetchnumpy()
    except duckdb.Error as exc:  # a type error the validator cannot see (e.g. comparing text to a number)
        raise FilterError(f"The filter cannot be applied: {str(exc).splitlines()[0]}") from None
    return result["id"].astype(np.int64)


# --- grouping ----------------------------------------------------------------------------------


def _group(archive: Archive, ids: np.ndarray, scores: np.ndarray, exclude: frozenset[int]) -> dict:
    keep = [(int(i), float(s)) for i, s in zip(ids, scores) if i >= 0 and int(i) not in exclude]
    if not keep:
        return {}
    owners = dict(
        archive.catalog.con.execute(
            "SELECT id, recording_id FROM windows WHERE list_contains(?, id)", [[i for i, _ in keep]]
        ).fetchall()
    )
    grouped: dict[int, list[tuple[int, float]]] = {}
    for window_id, score in keep:  # FAISS order: best first
        grouped.setdefault(owners[window_id], []).append((window_id, score))
    return grouped


def _hits(archive: Archive, grouped: dict, k: int, per_recording: int) -> list[RecordingHit]:
    chosen = list(grouped.items())[:k]
    if not chosen:
        return []
    window_ids = [w for _, wins in chosen for w, _ in wins[:per_recording]]
    con = archive.catalog.con
    spans = {
        i: (c, s, e)
        for i, c, s, e in con.execute(
            "SELECT id, channel, start_s, end_s FROM windows WHERE list_contains(?, id)", [window_ids]
        ).fetchall()
    }
    cursor = con.execute(f"SELECT * FROM {RECORDING_VIEW} WHERE list_contains(?, id)", [[r for r, _ in chosen]])
    names = [d[0] for d in cursor.description]
    rows = {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}
    hits = []
    for rank, (rec_id, wins) in enumerate(chosen, start=1):
        window_hits = tuple(WindowHit(w, *spans[w], score=s) for w, s in wins[:per_recording])
        row = rows[rec_id]
        hits.append(
            RecordingHit(
                rank=rank, recording_id=rec_id, path=row["path"], score=window_hits[0].score, best=window_hits[0],
                windows=window_hits, duration_s=row["duration_s"] or 0.0,
                metadata={k: v for k, v in row.items() if k not in HIDDEN_COLUMNS and k != "duration_s"},
            )
        )
    return hits


def _overlapping_windows(archive: Archive, path: Path, start_s: float, end_s: float) -> frozenset[int]:
    row = archive.catalog.one("SELECT id FROM recordings WHERE path = ?", [path_text(path)])
    return frozenset() if row is None else _recording_windows_overlapping(archive, row[0], start_s, end_s)


def _recording_windows_overlapping(archive: Archive, recording_id: int, start_s: float, end_s: float) -> frozenset[int]:
    rows = archive.catalog.con.execute(
        "SELECT id FROM windows WHERE recording_id = ? AND start_s < ? AND end_s > ?", [recording_id, end_s, start_s]
    ).fetchall()
    return frozenset(int(r[0]) for r in rows)


def _plain(value):
    """JSON-friendly scalars for metadata values (dates become ISO strings)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (np.generic,)):
        return value.item()
    return value
