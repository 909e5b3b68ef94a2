"""UI pieces shared by the pages: the archive guard, engine errors as messages, hit playback."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import streamlit as st

from indexer.api import Archive
from indexer.config import SAMPLE_RATE
from indexer.errors import ArchiveBusyError, SoundtraceError
from indexer.search.highlight import decode_span
from indexer.search.ranking import RecordingHit

from . import cached, media, plots, state

AUDIO_TYPES = [
    "wav", "flac", "ogg", "opus", "mp3", "aif", "aiff", "m4a", "aac", "alac", "amr", "webm", "wma", "spx", "caf", "au",
    "slk", "silk",
]  # fmt: skip
"""Upload formats: what libsndfile or FFmpeg decode (headerless raw PCM needs its rate, so not here)."""

CONTEXT_S = 5.0
"""Seconds of audio drawn either side of a hit window."""

BUSY = (
    "**Indexing in progress.** An indexing run is writing to the archive, which locks it until the "
    "run ends. Try again in a moment."
)


def require_archive() -> Archive:
    """The shared archive, or a friendly message (and the page stops) when it cannot be opened."""
    try:
        return state.archive()
    except ArchiveBusyError:
        st.info(BUSY)
        st.button("Try again")
        st.stop()
    except SoundtraceError as err:
        st.error(str(err))
        st.stop()
    raise AssertionError("unreachable")


@contextmanager
def shown_errors(stop: bool = True) -> Iterator[None]:
    """Engine errors become one message on the page (never a traceback); the page stops there."""
    try:
        yield
    except ArchiveBusyError:
        st.info(BUSY)
        if stop:
            st.stop()
    except SoundtraceError as err:
        st.error(str(err))
        if stop:
            st.stop()


def play_span(archive: Archive, recording_id: int, start_s: float, end_s: float, channel: int = 0) -> None:
    """A player holding exactly ``[start_s, end_s)`` of a catalogued recording, cut on the server."""
    with shown_errors(stop=False):
        st.audio(media.window_audio(archive, recording_id, start_s, end_s, channel), format="audio/wav")
        st.caption(f"{start_s:.1f}–{end_s:.1f} s" + (f", channel {channel}" if channel else ""))


def hit_rows(hits: list[RecordingHit], columns: list[str]) -> pd.DataFrame:
    """One row per recording: rank, file, score, best time range, length, then the given metadata."""
    rows = [
        {
            "#": h.rank, "file": Path(h.path).name, "score": round(h.score, 4),
            "from (s)": round(h.best.start_s, 1), "to (s)": round(h.best.end_s, 1),
            "length (s)": round(h.duration_s, 1), **{c: _cell(h.metadata.get(c)) for c in columns},
        }
        for h in hits
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _cell(value):
    """A metadata value for a table: missing shows as an empty cell, not a grey "None"."""
    return "" if value is None or value != value else value


def name_first(table: pd.DataFrame, column: str = "file") -> pd.DataFrame:
    """The file name where a full path was, its folder in a column after it: names read first."""
    paths = table[column].map(Path)
    out = table.copy()
    out[column] = paths.map(lambda p: p.name)
    out.insert(out.columns.get_loc(column) + 1, "folder", paths.map(lambda p: str(p.parent)))
    return out


FLAGGED_HEADERS = {
    "label": "label", "score": "score", "confidence": "confidence", "percentile": "percentile",
    "best_start_s": "from (s)", "best_end_s": "to (s)", "flagged_seconds": "flagged (s)",
}
"""An audit's flagged rows as a person reads them: plain headers, in this order."""
_ROUNDING = {"score": 3, "confidence": 2, "percentile": 1, "from (s)": 1, "to (s)": 1, "flagged (s)": 1}


def flagged_rows(flagged: pd.DataFrame, metadata_columns: list[str]) -> pd.DataFrame:
    """File name first, the figures rounded, then the metadata, and the (wide) folder last."""
    paths = flagged["file"].map(Path)
    table = pd.DataFrame({"file": paths.map(lambda p: p.name)})
    for column, header in FLAGGED_HEADERS.items():
        table[header] = flagged[column].round(_ROUNDING[header]) if header in _ROUNDING else flagged[column]
    for column in metadata_columns:
        if column in flagged and column not in table:
            table[column] = flagged[column].map(_cell)
    table["folder"] = paths.map(lambda p: str(p.parent))
    return table


def diff_rows(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """(path, label, score) rows of an audit diff as a table."""
    return pd.DataFrame([{"file": Path(p).name, "label": label, "score": round(s, 4)} for p, label, s in rows],
                        columns=["file", "label", "score"])


def hit_label(hit: RecordingHit) -> str:
    return f"#{hit.rank} {Path(hit.path).name} at {hit.best.start_s:.1f}–{hit.best.end_s:.1f} s (score {hit.score:.3f})"


def hit_detail(archive: Archive, hit: RecordingHit, query_vector: np.ndarray) -> None:
    """The hit window's player, then waveform and spectrogram with the window and its highlight."""
    best = hit.best
    play_span(archive, hit.recording_id, best.start_s, best.end_s, best.channel)
    with shown_errors(stop=False):
        spot = cached.highlight(archive, hit, query_vector)
        first = max(0.0, best.start_s - CONTEXT_S)
        last = max(best.end_s, min(hit.duration_s or best.end_s, best.end_s + CONTEXT_S))
        samples = decode_span(archive, hit.recording_id, first, last, best.channel)
        marked = (spot.start_s, spot.end_s) if spot else None
        st.pyplot(plots.hit_figure(samples, SAMPLE_RATE, first, (best.start_s, best.end_s), marked))
        if spot:
            st.caption(f"Highlight: {spot.start_s:.1f}–{spot.end_s:.1f} s (score {spot.score:.3f}), shown with its window.")
