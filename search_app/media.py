"""Audio served to the browser: only spans of recordings the catalog knows, found by recording id.

Nothing the browser sends is ever used as a path: the id is checked to be a plain integer, the
file is looked up in the catalog (``indexer.search.highlight.decode_span``), the span is cut on the
server and sent as an in-memory WAV of exactly that span (st.audio's start_time is whole seconds).
"""

from __future__ import annotations

import io
import math
from numbers import Integral, Real

import numpy as np
import soundfile as sf

from indexer.api import Archive
from indexer.config import SAMPLE_RATE
from indexer.errors import QueryError
from indexer.search.highlight import decode_span

MAX_SPAN_S = 60.0
"""Longer than any window or highlight the app plays; bounds the work one request can cause."""

_MAX_ID = 2**63 - 1


def window_audio(archive: Archive, recording_id: int, start_s: float, end_s: float, channel: int = 0) -> bytes:
    """WAV bytes of ``[start_s, end_s)`` of a catalogued recording; a QueryError for anything else."""
    rec = _whole_number(recording_id, "recording id")
    if not 1 <= rec <= _MAX_ID:
        raise QueryError(f"There is no recording {rec} in this archive.")
    start, end = _seconds(start_s), _seconds(end_s)
    if not 0 <= start < end:
        raise QueryError(f"The range {start:g}–{end:g} s is not a forward range within a recording.")
    if end - start > MAX_SPAN_S:
        raise QueryError(f"The app plays at most {MAX_SPAN_S:g} s at a time.")
    samples = decode_span(archive, rec, start, end, _whole_number(channel, "channel"))
    return wav_bytes(samples)


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV in memory (clipped to full scale first so loud audio cannot wrap around)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.asarray(samples, np.float32), -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _whole_number(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise QueryError(f"Audio is served by {what} (a whole number) only, not {type(value).__name__}.")
    return int(value)


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise QueryError("A time in a recording must be a finite number of seconds.")
    return float(value)
