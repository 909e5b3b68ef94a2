"""Search: a query vector -> the best windows -> ranked recordings with the time of each hit."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from indexer.archive.metadata import INTERNAL_COLUMNS, RECORDING_VIEW, output_name
from indexer.archive.window_sets import WindowSet
from indexer.config import REQUEST_MAX_DURATION_S, DecodeOptions
from indexer.embedding import DEFAULT_PROMPTS
from indexer.errors import QueryError
from indexer.search.filtering import SearchFilters, filtered_window_ids, recording_filter
from indexer.search.queries import ClipSpec, clip_query, text_query, window_query
from indexer.session import Session

HIDDEN_COLUMNS = INTERNAL_COLUMNS | {"path", "file_name", "duration_s"}
"""Catalog internals left out of a hit's ``properties`` (they have fields of their own or are noise)."""


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
    """The user's metadata columns, by their bare names (``agent``)."""
    properties: dict = field(default_factory=dict)
    """The recording's own figures: format, sample rate, channels, file time, quality."""

    def to_dict(self) -> dict:
        """One flat row for JSON and CSV: soundtrace's fields, then metadata as ``meta.<column>``,
        so no metadata column can shadow a score, rank or id."""
        own = {
            "rank": self.rank, "recording_id": self.recording_id, "path": self.path, "score": self.score,
            "start_s": self.best.start_s, "end_s": self.best.end_s, "channel": self.best.channel,
            "window_id": self.best.window_id, "duration_s": self.duration_s, "windows": [vars(w) for w in self.windows],
        }
        return {**own, **{k: _plain(v) for k, v in self.properties.items() if k not in own},
                **{output_name(k): _plain(v) for k, v in self.metadata.items()}}


# --- entry points ------------------------------------------------------------------------------


def search_text(
    archive: Session, text: str, k: int = 10, filters: SearchFilters = SearchFilters(),
    prompts: Sequence[str] = DEFAULT_PROMPTS, windows_per_recording: int = 3, exact: bool = False,
) -> list[RecordingHit]:
    return search_vector(archive, text_query(archive, text, prompts), k, filters, windows_per_recording, exact=exact)


def search_like(
    archive: Session, clip: ClipSpec, k: int = 10, filters: SearchFilters = SearchFilters(),
    decode: DecodeOptions = DecodeOptions(max_duration_s=REQUEST_MAX_DURATION_S), windows_per_recording: int = 3,
    exact: bool = False,
) -> list[RecordingHit]:
    query, exclude = clip_query(archive, clip, decode)
    return search_vector(archive, query, k, filters, windows_per_recording, exclude=exclude, exact=exact)


def search_window(
    archive: Session, window_id: int, k: int = 10, filters: SearchFilters = SearchFilters(),
    windows_per_recording: int = 3, exact: bool = False,
) -> list[RecordingHit]:
    query, exclude = window_query(archive, window_id)
    return search_vector(archive, query, k, filters, windows_per_recording, exclude=exclude, exact=exact)


def search_vector(
    archive: Session, query: np.ndarray, k: int = 10, filters: SearchFilters = SearchFilters(),
    windows_per_recording: int = 3, exclude: frozenset[int] = frozenset(), exact: bool = False,
) -> list[RecordingHit]:
    """Top ``k`` recordings by their best window, each with up to ``windows_per_recording`` windows;
    ``exact`` forces the full scan where an ANN index would answer."""
    if k < 1:
        raise QueryError("k must be at least 1.")
    if not np.isfinite(query).all():
        raise QueryError("The query vector is not finite.")
    allowed = allowed_windows(archive, filters)
    store = archive.store
    available = len(store) if allowed is None else len(allowed)
    fetch = min(available, max(32, k * windows_per_recording * 4))
    grouped: dict[int, list[tuple[int, float]]] = {}
    while fetch > 0:
        scores, ids = store.search(query, fetch + len(exclude), allowed, exact=exact)
        grouped = _group(archive, ids[0], scores[0], exclude)
        if len(grouped) >= k or fetch >= available:
            break
        fetch = min(available, fetch * 4)
    return _hits(archive, grouped, k, windows_per_recording)


# --- filters -----------------------------------------------------------------------------------


FILTER_CACHE_SIZE = 8
"""Filter answers kept per process (the app, a script's loop), each at most 8 MB (a broad one is
held as bits: 1.25 MB at 10M windows): the same filter with other words costs a DuckDB join over
every recording and its metadata (≈ 40 ms at 166,000 recordings, 180 ms for 3M windows at 10M)
that the answer, until the catalog changes, does not need again."""
_filter_cache: OrderedDict[tuple, WindowSet] = OrderedDict()


def allowed_window_ids(archive: Session, filters: SearchFilters) -> np.ndarray | None:
    """Window ids of the recordings passing the filters, or None when nothing is filtered."""
    allowed = allowed_windows(archive, filters)
    return None if allowed is None else allowed.ids


def allowed_windows(archive: Session, filters: SearchFilters) -> WindowSet | None:
    """The windows of the recordings passing the filters, or None when nothing is filtered."""
    where = recording_filter(archive.catalog, filters)
    if where is None:
        return None
    key = (str(archive.directory), archive.catalog.generation(), where.sql, where.params)
    if key in _filter_cache:
        _filter_cache.move_to_end(key)
        return _filter_cache[key]
    ids = filtered_window_ids(archive.catalog, where)  # under a memory and a time limit
    ids.setflags(write=False)  # shared by later callers
    allowed = WindowSet.of(ids, max(archive.store.end_id, int(ids[-1]) + 1 if len(ids) else 0))
    _filter_cache[key] = allowed
    while len(_filter_cache) > FILTER_CACHE_SIZE:
        _filter_cache.popitem(last=False)
    return allowed


# --- grouping ----------------------------------------------------------------------------------


def _group(archive: Session, ids: np.ndarray, scores: np.ndarray, exclude: frozenset[int]) -> dict:
    """Hits by recording. Scores are cosines, so they are kept within [-1, 1]: a stored float16
    vector is unit length only to about 1e-4, and a clip against its own stored window would
    otherwise score 1.00004."""
    scores = np.clip(scores, -1.0, 1.0)
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


def _hits(archive: Session, grouped: dict, k: int, per_recording: int) -> list[RecordingHit]:
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
    user = set(archive.catalog.metadata_columns())
    hits = []
    for rank, (rec_id, wins) in enumerate(chosen, start=1):
        window_hits = tuple(WindowHit(w, *spans[w], score=s) for w, s in wins[:per_recording])
        row = rows[rec_id]
        hits.append(
            RecordingHit(
                rank=rank, recording_id=rec_id, path=row["path"], score=window_hits[0].score, best=window_hits[0],
                windows=window_hits, duration_s=row["duration_s"] or 0.0,
                metadata={k: v for k, v in row.items() if k in user},
                properties={k: v for k, v in row.items() if k not in user and k not in HIDDEN_COLUMNS},
            )
        )
    return hits


def _plain(value):
    """JSON-friendly scalars for metadata values (dates become ISO strings)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (np.generic,)):
        return value.item()
    return value
