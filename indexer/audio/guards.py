"""What a file may claim and hold before decoding goes on: a sample rate no recording has, more
audio than a request may decode, sample values that are not audio. Each refusal is a typed
error with one sentence, recorded as the file's failure."""

from __future__ import annotations

import numpy as np

from indexer.audio.formats import AudioInfo
from indexer.config import DecodeOptions
from indexer.errors import AudioTooLongError, DecodeError, InvalidSamplesError

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
"""Rates outside this range are a broken header, not a recording (a 288 KB WAV claiming 1 Hz would
otherwise decode to 40 hours at 48 kHz)."""

MAX_SAMPLE_MAGNITUDE = 1e12
"""|x| above this is not audio. Float files do exceed full scale (±1): some hold integer-scale
values, up to 2.2e9 for 32-bit PCM stored as float, and those still embed; 1e30 overflows the
model's power spectrum into NaN."""


def check_rate(info: AudioInfo) -> None:
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise DecodeError(
            f"{info.path}: the header claims a sample rate of {info.sample_rate:,} Hz; recordings are sampled "
            f"between {MIN_SAMPLE_RATE:,} and {MAX_SAMPLE_RATE:,} Hz (a broken header)."
        )


def check_length(info: AudioInfo, opts: DecodeOptions, start_s: float, end_s: float | None) -> None:
    """Refuse before decoding when the header promises more than the limit in the range asked for."""
    span = min(info.duration_s, end_s if end_s is not None else info.duration_s) - start_s
    if span > opts.max_duration_s:
        raise AudioTooLongError(
            f"{info.path}: header claims {info.duration_s:,.0f} s, more than the "
            f"{opts.max_duration_s:,.0f} s limit (a broken header, or raise the limit)."
        )


def too_long_message(info: AudioInfo, opts: DecodeOptions) -> str:
    return f"{info.path}: decoding passed the {opts.max_duration_s:,.0f} s limit; stopped."


def check_values(info: AudioInfo, chunk: np.ndarray, frames_before: int) -> None:
    """Refuse NaN, infinities and absurd magnitudes before they reach resampling or the model."""
    if chunk.size == 0:
        return
    peak = float(np.max(np.abs(chunk)))
    if peak <= MAX_SAMPLE_MAGNITUDE:  # False for NaN too
        return
    bad = ~(np.abs(chunk) <= MAX_SAMPLE_MAGNITUDE)
    at = (frames_before + int(np.argmax(bad.any(axis=1)))) / info.sample_rate
    value = chunk[bad][0]
    what = "NaN" if np.isnan(value) else "infinite" if np.isinf(value) else f"{float(value):.3g}"
    raise InvalidSamplesError(
        f"{info.path}: a sample at {at:.2f} s is {what}, which no recording holds (full scale is ±1); "
        "the file is corrupt or not audio."
    )
