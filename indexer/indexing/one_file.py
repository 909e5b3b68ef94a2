"""One file's windows through the model a batch at a time, for the requests that embed a single
file (classify, query by example). Memory stays at one batch of windows however long the file
(``index`` streams the same way, across files, in ``pipeline``); how much audio one request may
decode is ``DecodeOptions.max_duration_s`` (``config.REQUEST_MAX_DURATION_S`` by default)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from indexer.audio import decode as audio
from indexer.audio.decode import AudioInfo
from indexer.audio.windows import QualityAccumulator, Window, cut_windows
from indexer.config import DecodeOptions, WindowConfig
from indexer.embedding import Encoder
from indexer.errors import AudioError


def embed_file(
    path: Path, encoder: Encoder, windows: WindowConfig, decode: DecodeOptions,
    start_s: float = 0.0, end_s: float | None = None, quality: QualityAccumulator | None = None,
) -> tuple[AudioInfo, Iterator[tuple[Window, np.ndarray]]]:
    """(info, (window, vector) pairs) for the mono mix of [start_s, end_s); window times count from
    ``start_s``. Each window's samples are dropped once embedded, after ``quality`` has seen them."""
    info, blocks = audio.stream(path, replace(decode, channels="mix"), start_s, end_s)
    return info, _batches(cut_windows(blocks, windows), encoder, quality, Path(path).name)


def _batches(
    cut: Iterator[Window], encoder: Encoder, quality: QualityAccumulator | None, name: str
) -> Iterator[tuple[Window, np.ndarray]]:
    size = max(1, int(getattr(encoder, "batch_size", 8)))
    batch: list[Window] = []
    for window in cut:
        if quality is not None:
            quality.add_window(window)
        batch.append(window)
        if len(batch) == size:
            yield from _embedded(batch, encoder, name)
            batch = []
    if batch:
        yield from _embedded(batch, encoder, name)


def _embedded(batch: list[Window], encoder: Encoder, name: str) -> Iterator[tuple[Window, np.ndarray]]:
    vectors = encoder.embed_audio([w.samples for w in batch])
    for window, vector in zip(batch, vectors):
        if not np.isfinite(vector).all():
            raise AudioError(no_vector_reason(name, window))
        yield window.released(), vector


def no_vector_reason(name: str, window: Window) -> str:
    """Why a file whose window the model gave NaN or infinity for cannot be used."""
    return (
        f"{name}: the model gave no usable vector for {window.start_s:.1f}–{window.end_s:.1f} s "
        f"(NaN or infinity; sample peak {window.quality.peak:.3g}), so the recording cannot be used."
    )
