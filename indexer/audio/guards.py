"""What a file may claim and hold before decoding goes on: a sample rate no recording has, more
channels than decoding keeps bounded, more audio than a request may decode, sample values that
are not audio. Each refusal is a typed error with one sentence, recorded as the file's failure.
Also how many frames one decoded block may hold, so memory follows samples, never seconds."""

from __future__ import annotations

import numpy as np

from indexer.audio.formats import AudioInfo
from indexer.config import SAMPLE_RATE, DecodeOptions
from indexer.errors import AudioTooLongError, DecodeError, InvalidSamplesError, UnsupportedFormatError

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
"""Rates outside this range are a broken header, not a recording (a 288 KB WAV claiming 1 Hz would
otherwise decode to 40 hours at 48 kHz)."""

MAX_SAMPLE_MAGNITUDE = 1e12
"""|x| above this is not audio. Float files do exceed full scale (±1): some hold integer-scale
values, up to 2.2e9 for 32-bit PCM stored as float, and those still embed; 1e30 overflows the
model's power spectrum into NaN."""


MAX_CHANNELS = 64
"""More channels than any field or studio recording holds (7th-order ambisonics has 64). With the
channels kept apart, one 10 s window of every channel is held at once: 64 of them are 123 MB of
float32, 1,024 would be 2 GB; a header claiming more is refused before decoding."""

MAX_BLOCK_SAMPLES = 1 << 22
"""Samples (frames x channels) in one decoded block, before and after resampling: 16 MB of
float32. Thirty seconds of 48 kHz stereo (2.9 M) fit as before; 16 channels at 768 kHz get
0.34 s blocks instead of 30 s ones (1.5 GB)."""


def check_rate(info: AudioInfo) -> None:
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise DecodeError(
            f"{info.path}: the header claims a sample rate of {info.sample_rate:,} Hz; recordings are sampled "
            f"between {MIN_SAMPLE_RATE:,} and {MAX_SAMPLE_RATE:,} Hz (a broken header)."
        )


def check_channels(info: AudioInfo) -> None:
    if info.channels > MAX_CHANNELS:
        raise UnsupportedFormatError(
            f"{info.path}: the header claims {info.channels:,} channels; soundtrace decodes recordings of at most "
            f"{MAX_CHANNELS} channels (split the file into fewer channels to index it)."
        )


def block_frames(info: AudioInfo, opts: DecodeOptions, streams: int) -> int:
    """Frames per decoded block: ``opts.block_s`` at most, fewer when the file's channels, or the
    ``streams`` its blocks become at 48 kHz, would hold more than ``MAX_BLOCK_SAMPLES``."""
    rate = info.sample_rate
    by_time = int(round(opts.block_s * rate))
    by_input = MAX_BLOCK_SAMPLES // max(1, info.channels)
    by_output = MAX_BLOCK_SAMPLES * rate // (SAMPLE_RATE * max(1, streams))
    return max(1, min(by_time, by_input, by_output))


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
    """Refuse NaN, infinities and absurd magnitudes before they reach resampling or the model.

    The usual pass is the block's max and min, with no temporary the size of the block; only a
    block that fails is searched for its first bad sample, a slice at a time."""
    if chunk.size == 0:
        return
    if float(chunk.max()) <= MAX_SAMPLE_MAGNITUDE and -float(chunk.min()) <= MAX_SAMPLE_MAGNITUDE:  # False for NaN
        return
    rows = max(1, MAX_BLOCK_SAMPLES // 16 // max(1, chunk.size // chunk.shape[0]))
    for lo in range(0, chunk.shape[0], rows):
        piece = chunk[lo : lo + rows]
        bad = ~(np.abs(piece) <= MAX_SAMPLE_MAGNITUDE)
        if bad.any():
            at = (frames_before + lo + int(np.argmax(bad.reshape(len(piece), -1).any(axis=1)))) / info.sample_rate
            value = piece[bad][0]
            what = "NaN" if np.isnan(value) else "infinite" if np.isinf(value) else f"{float(value):.3g}"
            raise InvalidSamplesError(
                f"{info.path}: a sample at {at:.2f} s is {what}, which no recording holds (full scale is ±1); "
                "the file is corrupt or not audio."
            )
