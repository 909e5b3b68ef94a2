"""Refine a 10 s hit to the 1–3 s that matter most, on demand, with the archive's own encoder.

Archive windows are coarse (10 s by default) so that indexing stays cheap; a person listening to a
hit wants the moment itself. Refining costs a few short embeddings per hit, so it runs only for
the hits a person looks at (the app, ``search --refine``, ``audit export --refine``).

The rules, in order:

1. **Decode only the coarse window** ``[start_s, end_s)`` of the recording's file (its path from
   the catalog). A recording the catalog does not know, or one that failed to index, is a
   ``QueryError``; a file that is gone or unreadable is an ``AudioError``. A recording indexed with
   split channels (some window has ``channel > 0``) is decoded split and ``channel`` is taken;
   otherwise the channels are mixed, as at indexing, and only channel 0 exists. Headerless raw
   PCM is decoded with the rate, channels and sample format the catalog recorded for it.
2. **Sub-windows** are cut with ``cut_windows`` (``sub_window_s`` long, ``hop_s`` apart, a tail kept
   when it holds at least ``min(min_span_s, sub_window_s)``), so short content is repeat-padded as
   CLAP expects; a range shorter than one sub-window gives exactly one (padded) sub-window.
3. **Score** each sub-window by its cosine with the query, normalised to unit length. The query
   must be a vector of the archive's dimension: ``archive.encoder.embed_text([...])[0]`` for
   words, ``archive.window_vectors([id])[0]`` for query by example.
4. **The span** starts as the best sub-window (ties: the earliest). If that is longer than
   ``max_span_s`` it is cut to ``max_span_s`` around its own centre. It then grows by adjacent
   sub-windows (the next one left or right of what is already taken) whose score is at least
   ``best - margin`` and whose union with the span stays within ``max_span_s``; at each step the
   higher-scoring side is taken first (ties: the left, earlier one), and growth stops when neither
   side qualifies. Finally a span shorter than ``min_span_s`` is widened to ``min_span_s`` around
   the best sub-window's centre, shifted back inside the coarse window where it would leave it
   (shorter only when the window's audio itself is). ``score`` is the best sub-window's cosine.

Everything is deterministic: the same archive, hit and query give the same span.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from indexer.audio import decode as audio
from indexer.audio.windows import Window, cut_windows
from indexer.config import SAMPLE_RATE, DecodeOptions, RawPcmFormat, WindowConfig
from indexer.embedding import Encoder
from indexer.errors import AudioError, QueryError

if TYPE_CHECKING:
    from indexer.search.ranking import RecordingHit
    from indexer.session import Session


@dataclass(frozen=True)
class HighlightConfig:
    """Sub-window geometry and span limits; ``margin`` is how close to the best a neighbour must
    score to join the span (cosine units)."""

    sub_window_s: float = 2.0
    hop_s: float = 0.5
    min_span_s: float = 1.0
    max_span_s: float = 3.0
    margin: float = 0.02

    def __post_init__(self) -> None:
        if not 0.5 <= self.sub_window_s <= 10.0:
            raise QueryError("The highlight sub-window must be between 0.5 and 10 seconds long.")
        if not 0 < self.hop_s <= self.sub_window_s:
            raise QueryError("The highlight hop must be positive and no longer than the sub-window.")
        if not 0 < self.min_span_s <= self.max_span_s:
            raise QueryError("The highlight span limits need 0 < min_span_s <= max_span_s.")
        if self.margin < 0:
            raise QueryError("The highlight margin cannot be negative.")

    @property
    def windows(self) -> WindowConfig:
        return WindowConfig(self.sub_window_s, self.hop_s, min(self.min_span_s, self.sub_window_s))


@dataclass(frozen=True)
class Highlight:
    recording_id: int | None
    """None for audio outside the archive (classify's upload)."""
    channel: int
    start_s: float
    end_s: float
    score: float
    window_start_s: float
    window_end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class _Plan:
    """One coarse window decoded and cut, waiting for its sub-window vectors."""

    recording_id: int | None
    channel: int
    window_start_s: float
    window_end_s: float
    content_end_s: float
    subs: list[Window]


def refine(
    archive: "Session", recording_id: int, start_s: float, end_s: float, query: np.ndarray, channel: int = 0,
    config: HighlightConfig = HighlightConfig(),
) -> Highlight:
    """The best 1–3 s of one coarse window of one recording (see the module docstring for the rule)."""
    unit = check_query(archive, query)
    plan = _plan(archive, int(recording_id), float(start_s), float(end_s), int(channel), config)
    vectors = archive.encoder.embed_audio([w.samples for w in plan.subs])
    return _highlight(plan, np.asarray(vectors, np.float32) @ unit, config)


def refine_samples(
    encoder: Encoder, samples: np.ndarray, start_s: float, query: np.ndarray, config: HighlightConfig = HighlightConfig()
) -> Highlight:
    """The best 1–3 s of decoded mono 48 kHz ``samples`` that begin at ``start_s`` of their file:
    the same rule, for audio outside the archive (classify's best window of an upload)."""
    unit = unit_query(query, encoder.identity.dim)
    plan = _cut(np.asarray(samples, np.float32), None, 0, float(start_s), float(start_s) + len(samples) / SAMPLE_RATE, config)
    vectors = encoder.embed_audio([w.samples for w in plan.subs])
    return _highlight(plan, np.asarray(vectors, np.float32) @ unit, config)


def refine_hits(
    archive: "Session", hits: Sequence["RecordingHit"], query: np.ndarray, top: int | None = None,
    config: HighlightConfig = HighlightConfig(), *, skip_unreadable: bool = False,
) -> dict[int, Highlight]:
    """recording_id -> Highlight of each hit's best window, for the first ``top`` hits.

    All sub-windows of all hits go to the encoder in one call, so the model batches across hits.
    With ``skip_unreadable`` a hit whose file is gone or cannot be decoded is left out of the
    result (the caller keeps its coarse window) instead of failing the whole batch.
    """
    if top is not None and top < 0:
        raise QueryError("The number of hits to refine cannot be negative.")
    unit = check_query(archive, query)
    plans: list[_Plan] = []
    seen: set[int] = set()
    for hit in hits[: len(hits) if top is None else top]:
        if hit.recording_id in seen:
            continue
        seen.add(hit.recording_id)
        try:
            plans.append(_plan(archive, hit.recording_id, hit.best.start_s, hit.best.end_s, hit.best.channel, config))
        except AudioError:
            if not skip_unreadable:
                raise
    if not plans:
        return {}
    vectors = np.asarray(archive.encoder.embed_audio([w.samples for p in plans for w in p.subs]), np.float32)
    scores = vectors @ unit
    found: dict[int, Highlight] = {}
    at = 0
    for plan in plans:
        found[plan.recording_id] = _highlight(plan, scores[at : at + len(plan.subs)], config)
        at += len(plan.subs)
    return found


def check_query(archive: "Session", query: np.ndarray) -> np.ndarray:
    """The query as a unit float32 vector of the archive's dimension, or a QueryError."""
    return unit_query(query, archive.manifest.dim)


def unit_query(query: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(query, dtype=np.float32)
    if q.ndim == 2 and q.shape[0] == 1:
        q = q[0]
    if q.shape != (dim,):
        raise QueryError(f"The query vector has shape {tuple(q.shape)}; this archive's vectors have {dim} dimensions.")
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm == 0.0:
        raise QueryError("The query vector is zero or not finite; it cannot be compared with anything.")
    return q / np.float32(norm)


# --- decoding and cutting ----------------------------------------------------------------------


def decode_span(archive: "Session", recording_id: int, start_s: float, end_s: float, channel: int = 0) -> np.ndarray:
    """Mono 48 kHz samples of ``[start_s, end_s)`` of an indexed recording, decoded as it was indexed.

    The file is found only through the catalog, so callers (the app's player) never pass a path;
    a recording the catalog does not know, or one that failed to index, is a ``QueryError``.
    """
    if start_s < 0 or end_s <= start_s:
        raise QueryError(f"The range {start_s:g}–{end_s:g} s is not a forward range within a recording.")
    row = archive.catalog.one(
        "SELECT path, status, format, sample_rate, channels FROM recordings WHERE id = ?", [recording_id]
    )
    if row is None:
        raise QueryError(f"There is no recording {recording_id} in this archive.")
    path, status, fmt, rate, channels = row
    if status != "indexed":
        name = Path(path).name
        raise QueryError(f"Recording {recording_id} ({name}) was not indexed, so it has no audio to play or refine.")
    top_channel = archive.catalog.one("SELECT max(channel) FROM windows WHERE recording_id = ?", [recording_id])[0]
    split = bool(top_channel)
    if channel < 0 or channel > (int(top_channel) if split else 0):
        raise QueryError(f"Recording {recording_id} has no indexed channel {channel}.")
    if not Path(path).is_file():
        raise AudioError(
            f"The file of recording {recording_id}, {path}, is gone; it was moved or deleted after indexing."
        )
    opts = DecodeOptions(channels="split" if split else "mix", raw=_raw_format(fmt, rate, channels))
    _, samples = audio.load(path, opts, start_s, end_s)
    if channel >= samples.shape[0]:
        raise AudioError(f"{path} now has {samples.shape[0]} channel(s); it changed after indexing.")
    return samples[channel]


def _plan(archive: "Session", recording_id: int, start_s: float, end_s: float, channel: int,
          config: HighlightConfig) -> _Plan:
    return _cut(decode_span(archive, recording_id, start_s, end_s, channel), recording_id, channel, start_s, end_s, config)


def _cut(stream: np.ndarray, recording_id: int | None, channel: int, start_s: float, end_s: float,
         config: HighlightConfig) -> _Plan:
    subs = [
        Window(w.channel, start_s + w.start_s, start_s + w.end_s, w.samples, w.quality)
        for w in cut_windows([stream], config.windows)
    ]
    return _Plan(recording_id, channel, start_s, end_s, start_s + stream.shape[0] / SAMPLE_RATE, subs)


def _raw_format(fmt: str | None, rate: int | None, channels: int | None) -> RawPcmFormat | None:
    """The raw PCM parameters a headerless file was indexed with ('RAW s16le' + rate + channels)."""
    if not fmt or not fmt.startswith("RAW ") or not rate:
        return None
    return RawPcmFormat(int(rate), int(channels or 1), fmt.split(" ", 1)[1])  # type: ignore[arg-type]


# --- the span ----------------------------------------------------------------------------------


def _highlight(plan: _Plan, scores: np.ndarray, config: HighlightConfig) -> Highlight:
    scores = np.asarray(scores, dtype=np.float64)
    best = int(np.argmax(scores))  # the first maximum: ties go to the earliest sub-window
    lo, hi = _bounds(plan.subs[best], plan.content_end_s)
    if hi - lo > config.max_span_s:
        centre = (lo + hi) / 2
        lo, hi = centre - config.max_span_s / 2, centre + config.max_span_s / 2
    floor = scores[best] - config.margin
    left, right = best - 1, best + 1
    while True:
        options = []
        for i in (left, right):
            if 0 <= i < len(scores) and scores[i] >= floor:
                s, e = _bounds(plan.subs[i], plan.content_end_s)
                if max(hi, e) - min(lo, s) <= config.max_span_s + 1e-9:
                    options.append((-scores[i], i, s, e))
        if not options:
            break
        _, i, s, e = min(options)  # the higher score, then the earlier side
        lo, hi = min(lo, s), max(hi, e)
        left, right = (left - 1, right) if i == left else (left, right + 1)
    if hi - lo < config.min_span_s:
        lo, hi = _widen(plan, best, config.min_span_s)
    return Highlight(
        recording_id=plan.recording_id, channel=plan.channel, start_s=_tidy(lo), end_s=_tidy(hi),
        score=float(scores[best]), window_start_s=plan.window_start_s, window_end_s=plan.window_end_s,
    )


def _bounds(window: Window, content_end_s: float) -> tuple[float, float]:
    return window.start_s, min(window.end_s, content_end_s)


def _widen(plan: _Plan, best: int, length: float) -> tuple[float, float]:
    """``length`` seconds around the best sub-window's centre, kept inside the decoded window."""
    first, last = plan.window_start_s, max(plan.window_start_s, plan.content_end_s)
    if last - first <= length:
        return first, last
    s, e = _bounds(plan.subs[best], plan.content_end_s)
    lo = min(max((s + e) / 2 - length / 2, first), last - length)
    return lo, lo + length


def _tidy(seconds: float) -> float:
    """Microsecond precision: sample arithmetic should not show up as 12.000000000001 s."""
    return round(float(seconds), 6)
