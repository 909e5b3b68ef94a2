"""UI pieces shared by the pages: the archive guard, engine errors as messages, hit playback."""

from __future__ import annotations

import numbers
from contextlib import contextmanager
from datetime import date, datetime, time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import streamlit as st

from indexer.api import Archive
from indexer.archive.metadata import OUTPUT_PREFIX, output_name
from indexer.config import SAMPLE_RATE
from indexer.errors import ArchiveBusyError, ArchiveNotFoundError, SoundtraceError
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
    if not state.archive_exists():
        no_archive_here()
    try:
        return state.archive()
    except ArchiveBusyError:
        st.info(BUSY)
        st.button("Try again")
        st.stop()
    except ArchiveNotFoundError:
        no_archive_here()
    except SoundtraceError as err:
        st.error(str(err))
        st.stop()
    raise AssertionError("unreachable")


def no_archive_here() -> None:
    """Says there is no archive and how to make one (no model is needed to say so); the page stops."""
    directory = state.archive_dir()
    st.info(
        f"**No archive here.** There is no soundtrace archive at `{directory}`. Make one with "
        f"`soundtrace index FOLDER --archive {directory}` (add `--metadata FILE.csv` for your own columns), "
        "then reload this page, or start the app on an existing archive with `soundtrace app --archive DIR`."
    )
    st.stop()


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


MARK_SIGNS = {True: "✓", False: "✗"}
"""A window's mark for the label in use, as the ✓ / ✗ buttons show it."""


def hit_rows(hits: list[RecordingHit], columns: list[str], marks: dict[int, bool] | None = None) -> pd.DataFrame:
    """One row per recording: rank, file, its mark (with ``marks``, by window: the label in use),
    score, best time range, length, the metadata as ``meta.<column>``, and the (wide) folder last."""
    table = pd.DataFrame({
        "#": [h.rank for h in hits], "file": [Path(h.path).name for h in hits],
        **({"mark": [MARK_SIGNS.get(marks.get(h.best.window_id), "") for h in hits]} if marks is not None else {}),
        "score": [round(h.score, 4) for h in hits],
        "from (s)": [round(h.best.start_s, 1) for h in hits], "to (s)": [round(h.best.end_s, 1) for h in hits],
        "length (s)": [round(h.duration_s, 1) for h in hits],
    })  # fmt: skip
    for column in columns:
        table[output_name(column)] = metadata_values([h.metadata.get(column) for h in hits])
    table["folder"] = [str(Path(h.path).parent) for h in hits]
    return table


def metadata_values(values: list):
    """One metadata column as a table shows it, of one type so that it serialises as it is: text
    with missing values as empty cells, dates and times as ISO text, numbers and booleans as
    numbers and booleans (missing ones left empty)."""
    present = [v for v in values if not _missing(v)]
    if all(isinstance(v, bool) for v in present) and present:
        return pd.array([None if _missing(v) else v for v in values], dtype="boolean")
    if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in present) and present:
        return pd.array([None if _missing(v) else int(v) for v in values], dtype="Int64")
    if all(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in present) and present:
        return pd.array([None if _missing(v) else float(v) for v in values], dtype="Float64")
    return [_text(v) for v in values]


def _missing(value) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


def _text(value) -> str:
    """A cell as text: empty when missing (not a grey "None"), dates in ISO form."""
    if _missing(value):
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)


_FIXED_WIDTHS = {"#": 40, "mark": 44, "folder": "small"}
_LONG_TEXT, _LONG_TEXT_PX = 26, 200


def column_widths(table: pd.DataFrame) -> dict:
    """Column configs that keep a results table within the page: columns sized by the grid to their
    text, but a text column with long values (a file name, a note) capped (the grid would make it as
    wide as the page), the (widest) folder last and narrow (hover over a cell, or drag the column
    wider, to read it), and the file name pinned, in view should many columns still make it scroll."""
    config = {}
    for column in table.columns:
        width = _FIXED_WIDTHS.get(column)
        text = pd.api.types.is_string_dtype(table[column]) or table[column].dtype == object
        if width is None and text and any(len(_text(v)) > _LONG_TEXT for v in table[column]):
            width = _LONG_TEXT_PX
        config[column] = st.column_config.Column(width=width, pinned=column in ("#", "file") or None)
    return config


def name_first(table: pd.DataFrame, column: str = "file") -> pd.DataFrame:
    """The file name where a full path was, first, and its folder in the last column: names read first,
    and the widest column is the one that may be cut."""
    paths = table[column].map(Path)
    out = table.copy()
    out[column] = paths.map(lambda p: p.name)
    out["folder"] = paths.map(lambda p: str(p.parent))
    return out


FLAGGED_HEADERS = {
    "label": "label", "score": "score", "confidence": "confidence", "percentile": "percentile",
    "best_start_s": "from (s)", "best_end_s": "to (s)", "flagged_seconds": "flagged (s)",
}
"""An audit's flagged rows as a person reads them: plain headers, in this order."""
_ROUNDING = {"score": 3, "confidence": 2, "percentile": 1, "from (s)": 1, "to (s)": 1, "flagged (s)": 1}


def flagged_rows(flagged: pd.DataFrame, marks: dict[tuple[str, int], bool] | None = None) -> pd.DataFrame:
    """File name first, its label and (with ``marks``, by label and window) its mark, the figures
    rounded, then the metadata (the frame's ``meta.<column>`` columns), and the (wide) folder last."""
    paths = flagged["file"].map(Path)
    table = pd.DataFrame({"file": paths.map(lambda p: p.name), "label": flagged["label"]})
    if marks is not None:
        table["mark"] = [MARK_SIGNS.get(marks.get((label, int(w))), "") for label, w in zip(flagged["label"], flagged["best_window_id"])]
    for column, header in FLAGGED_HEADERS.items():
        if header not in table:
            table[header] = flagged[column].round(_ROUNDING[header]) if header in _ROUNDING else flagged[column]
    for column in flagged.columns:
        if str(column).startswith(OUTPUT_PREFIX):
            table[column] = metadata_values(flagged[column].tolist())
    table["folder"] = paths.map(lambda p: str(p.parent))
    return table


def diff_counts(counts: list[tuple[str, int | None, int | None]]) -> pd.DataFrame:
    """Flagged recordings per label in two runs and the change; empty where a run lacked the label."""
    before = pd.array([x for _, x, _ in counts], dtype="Int64")
    after = pd.array([y for _, _, y in counts], dtype="Int64")
    return pd.DataFrame({"label": [name for name, _, _ in counts], "before": before, "after": after, "change": after - before})


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
