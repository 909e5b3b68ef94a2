"""Engine calls whose results are kept between reruns: Streamlit reruns a page on every click.

Each wrapper takes the archive (or model) unhashed (leading underscore) plus a key that names
what the result depends on, so a new archive, run or query never reads a stale entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from indexer.api import Archive
from indexer.audio import decode as audio
from indexer.classify.zero_shot import Classification, ClassifyOptions, classify_file
from indexer.config import REQUEST_MAX_DURATION_S, DecodeOptions
from indexer.learning.learned import newest_learned
from indexer.search.highlight import Highlight, refine_hits
from indexer.search.queries import ClipSpec, clip_query, text_query, window_query
from indexer.search.ranking import RecordingHit

from . import media, tempfiles

PREVIEW_S = 600.0
"""The classify page draws at most the first ten minutes of an upload."""


@dataclass(frozen=True)
class Query:
    """A search query ready for ``search_vector``: the vector, windows to leave out, and words for it."""

    vector: np.ndarray
    exclude: frozenset[int]
    described: str
    label: str = ""
    """What its hits are marked as by default: the words, or the learned label."""


def archive_key(archive: Archive) -> tuple[str, int]:
    return str(archive.directory), archive.generation


@st.cache_data(max_entries=64, show_spinner=False)
def _text_vector(_archive: Archive, key: tuple, text: str) -> np.ndarray:
    return text_query(_archive, text)


@st.cache_data(max_entries=16, show_spinner="Listening to the example clip…")
def _clip_vector(_archive: Archive, key: tuple, data: bytes, name: str) -> tuple[np.ndarray, frozenset[int]]:
    with tempfiles.upload_as_file(data, name) as path:
        return clip_query(_archive, ClipSpec(path))


def query(archive: Archive, text: str = "", example: tuple[bytes, str] | None = None, window_id: int | None = None,
          learned: str = "") -> Query | None:
    """The query a person asked for: a "more like this" window, else a learned label (its newest
    version's direction, as ``soundtrace search --label``), else an example clip, else words."""
    key = archive_key(archive)
    if window_id is not None:
        vector, exclude = window_query(archive, window_id)
        return Query(vector, exclude, f"sounding like window {window_id}", text.strip())
    if learned:
        found = newest_learned(archive, learned)
        return Query(found.scorer.direction, frozenset(), f"for the learned label “{found.label}” (version {found.version})",
                     found.label)
    if example is not None:
        vector, exclude = _clip_vector(archive, key, *example)
        return Query(vector, exclude, f"sounding like {Path(example[1]).name}", text.strip())
    if text.strip():
        return Query(_text_vector(archive, key, text.strip()), frozenset(), f"matching “{text.strip()}”", text.strip())
    return None


@st.cache_data(max_entries=256, show_spinner="Finding the 1–3 s that match best…")
def _highlight(_archive: Archive, _hit: RecordingHit, key: tuple, query_bytes: bytes) -> Highlight | None:
    found = refine_hits(_archive, [_hit], np.frombuffer(query_bytes, np.float32), skip_unreadable=True)
    return found.get(_hit.recording_id)


def highlight(archive: Archive, hit: RecordingHit, query_vector: np.ndarray) -> Highlight | None:
    """The refined 1–3 s of a hit's best window; None when its file cannot be read any more."""
    vector = np.ascontiguousarray(query_vector, np.float32)
    key = (*archive_key(archive), hit.recording_id, hit.best.window_id)
    return _highlight(archive, hit, key, vector.tobytes())


@st.cache_data(max_entries=8, show_spinner="Classifying…")
def _classify(_encoder, model_key: str, data: bytes, name: str, labels: str, multi_label: bool,
              threshold: float) -> tuple[Classification, np.ndarray]:
    with tempfiles.upload_as_file(data, name) as path:
        result = classify_file(path, labels, _encoder, ClassifyOptions(multi_label=multi_label, threshold=threshold))
        _, samples = audio.load(path, DecodeOptions(max_duration_s=REQUEST_MAX_DURATION_S), 0.0, PREVIEW_S)
    return result, samples[0]


@st.cache_data(max_entries=8, show_spinner=False)
def upload_span(data: bytes, name: str, start_s: float, end_s: float) -> bytes:
    """WAV bytes of ``[start_s, end_s)`` of an uploaded file (the classify page's highlight player)."""
    with tempfiles.upload_as_file(data, name) as path:
        _, samples = audio.load(path, DecodeOptions(max_duration_s=REQUEST_MAX_DURATION_S), start_s, end_s)
    return media.wav_bytes(samples[0])


def classify_upload(encoder, data: bytes, name: str, labels: str, multi_label: bool = False,
                    threshold: float = 0.3) -> tuple[Classification, np.ndarray]:
    """``classify_file`` on uploaded bytes (a temp file deleted after use), plus mono samples to draw."""
    model_key = f"{encoder.identity.model_id}@{encoder.identity.revision}"
    return _classify(encoder, model_key, data, Path(name).name, labels, multi_label, float(threshold))


@st.cache_data(max_entries=8, show_spinner=False)
def _export(_archive: Archive, key: tuple, run_id: int, updated_at: str) -> bytes:
    return tempfiles.export_bytes(_archive.catalog, run_id, "csv")


def export_csv(archive: Archive, run_id: int, updated_at) -> bytes:
    """The run's CSV export (best label per recording, with metadata) as bytes."""
    return _export(archive, archive_key(archive), int(run_id), str(updated_at))
