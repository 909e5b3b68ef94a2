"""Cut decoded audio into the fixed windows CLAP embeds, with cheap quality figures per window.

soundtrace cuts its own windows (never transformers' random crop) so that a window's vector
depends only on its samples. Cutting streams over ``decode.stream`` blocks and keeps one window
plus one block in memory, however long the recording.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import numpy as np

from indexer.config import SAMPLE_RATE, DecodeOptions, WindowConfig

RMS_FLOOR_DB = -120.0
"""dBFS reported for digital silence (log of zero); below any real recording's noise floor."""

SILENCE_FRAME_S = 0.05
"""Silence is judged per 50 ms frame: short enough for pauses between words, long enough to
ignore single zero crossings."""

SILENCE_DB = -60.0
"""A frame whose RMS is below -60 dBFS counts as silent (quieter than a quiet phone line's hiss)."""

CLIP_LEVEL = 0.99
"""|x| >= 0.99 counts as clipped. Not 1.0: resampling to 48 kHz turns a flat clipped plateau into
ripples around full scale and only about half of its samples stay >= 1.0; from 0.99 about 90 % or
more of the true clipped fraction is counted for sources at 16 kHz and up (55-95 % for 8 kHz
telephone audio). A 0 dBFS sine reaches it too: by sample values alone a tone at full scale
cannot be told from a clipped one."""

CLIPPED_RECORDING_FRACTION = 0.005
"""A recording is_clipped when more than 0.5 % of its samples are clipped: isolated peaks touching
full scale stay below it, audibly distorted speech or music goes well above."""

SILENT_RECORDING_FRACTION = 0.99
"""A recording is_silent (a dead line) when at least 99 % of its 50 ms frames are silent ..."""

DEAD_PEAK = DecodeOptions().silence_floor
"""... or when its loudest sample stays below this (1e-4 = -80 dBFS): nothing but dither."""

_SILENT_POWER = 10.0 ** (SILENCE_DB / 10.0)


@dataclass(frozen=True)
class WindowQuality:
    rms_db: float
    peak: float
    clipped_fraction: float
    silent_fraction: float


@dataclass(frozen=True)
class Window:
    """One channel's fixed-length slice; ``end_s`` is where real content ends (a tail ends early)."""

    channel: int
    start_s: float
    end_s: float
    samples: np.ndarray
    quality: WindowQuality

    def released(self) -> "Window":
        """The same window without its samples: what is kept once it is embedded (memory stays flat)."""
        return replace(self, samples=_NO_SAMPLES)


_NO_SAMPLES = np.empty(0, np.float32)


@dataclass(frozen=True)
class RecordingQuality:
    peak: float
    rms_db: float
    clipped_fraction: float
    silent_fraction: float
    is_silent: bool
    is_clipped: bool


def repeat_pad(x: np.ndarray, n: int) -> np.ndarray:
    """CLAP's "repeatpad": tile a short clip as many whole times as fit, zero-fill the rest."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if x.shape[0] >= n:
        return x[:n].copy()
    out = np.zeros(n, dtype=np.float32)
    if x.shape[0]:
        reps = n // x.shape[0]
        out[: reps * x.shape[0]] = np.tile(x, reps)
    return out


def cut_windows(
    blocks: Iterable[np.ndarray], cfg: WindowConfig, sample_rate: int = SAMPLE_RATE
) -> Iterator[Window]:
    """Windows ordered by start then channel; a short tail is kept (repeat-padded) when it holds at
    least ``cfg.min_tail_s`` of content not already covered, or when it is the only window.

    Holds one buffer of a window plus a block per stream, into which each block is copied (joining
    blocks into a new array would hold the old and new buffers at once: twice the memory with many
    channels kept apart); windows own their samples, so producers may reuse a block."""
    length = int(round(cfg.length_s * sample_rate))
    hop = int(round(cfg.hop_s * sample_rate))
    min_tail = int(round(cfg.min_tail_s * sample_rate))
    streams: int | None = None
    buf = np.empty((0, 0), np.float32)  # unconsumed samples in buf[:, :have]
    have = 0
    origin = 0  # absolute sample index of buf[:, 0]; always the next window's start
    covered = 0  # end of the last full window emitted
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        block = block[None, :] if block.ndim == 1 else block
        if streams is None:
            streams = block.shape[0]
        elif block.shape[0] != streams:
            raise ValueError(f"block has {block.shape[0]} streams, earlier blocks had {streams}")
        n = block.shape[1]
        if n == 0:
            continue
        if have + n > buf.shape[1]:  # the first block, or a longer one than before
            grown = np.empty((streams, max(have + n, length + n)), np.float32)
            if have:
                grown[:, :have] = buf[:, :have]
            buf = grown
        buf[:, have : have + n] = block
        have += n
        start = 0
        while have - start >= length:
            for ch in range(streams):
                yield _window(ch, origin + start, buf[ch, start : start + length], length, sample_rate)
            covered = origin + start + length
            start += hop
        if start:
            buf[:, : have - start] = buf[:, start:have]  # the rest moves to the front (numpy copes with the overlap)
            have -= start
            origin += start
    if streams is None or have == 0:
        return
    if covered == 0 or (have >= min_tail and origin + have > covered):
        for ch in range(streams):
            yield _window(ch, origin, buf[ch, :have], length, sample_rate)


def _window(channel: int, start: int, content: np.ndarray, length: int, rate: int) -> Window:
    return Window(
        channel=channel,
        start_s=start / rate,
        end_s=(start + content.shape[0]) / rate,
        samples=repeat_pad(content, length),
        quality=_measure(content, rate).window_quality(),
    )


@dataclass
class _Stats:
    """Additive sums, so figures for a whole recording are exact sums of its parts."""

    n: int = 0
    sumsq: float = 0.0
    peak: float = 0.0
    clipped: int = 0
    silent: int = 0

    def add(self, other: "_Stats") -> None:
        self.n += other.n
        self.sumsq += other.sumsq
        self.peak = max(self.peak, other.peak)
        self.clipped += other.clipped
        self.silent += other.silent

    def rms_db(self) -> float:
        if self.n == 0 or self.sumsq <= 0.0:
            return RMS_FLOOR_DB
        return max(RMS_FLOOR_DB, 10.0 * float(np.log10(self.sumsq / self.n)))

    def window_quality(self) -> WindowQuality:
        n = max(self.n, 1)
        return WindowQuality(self.rms_db(), self.peak, self.clipped / n, self.silent / n)


def _measure(x: np.ndarray, rate: int) -> _Stats:
    """Figures for one channel's real content (padding never enters them).

    float32 throughout and no temporary for |x|: this runs on every decoded sample, beside the model.
    """
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    n = x.shape[0]
    if n == 0:
        return _Stats()
    sq = x * x
    frame = max(1, int(round(SILENCE_FRAME_S * rate)))
    full = n // frame
    frame_energy = sq[: full * frame].reshape(full, frame).sum(axis=1, dtype=np.float64)
    silent = int(np.count_nonzero(frame_energy < _SILENT_POWER * frame)) * frame
    tail = float(sq[full * frame :].sum(dtype=np.float64))
    if n > full * frame and tail < _SILENT_POWER * (n - full * frame):
        silent += n - full * frame
    peak = float(max(x.max(), -x.min()))
    clipped = int(np.count_nonzero(x >= CLIP_LEVEL)) + int(np.count_nonzero(x <= -CLIP_LEVEL))
    return _Stats(n, float(frame_energy.sum()) + tail, peak, clipped, silent)


class QualityAccumulator:
    """Recording-level figures from windows (or raw blocks) as they stream past.

    Overlapping windows are counted once: for each channel only the part of a window beyond what
    earlier windows covered is added. Feed either windows or samples for one recording, not both.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, silence_floor: float = DEAD_PEAK) -> None:
        self._rate = sample_rate
        self._floor = silence_floor
        self._stats = _Stats()
        self._covered: dict[int, int] = {}

    def add_window(self, window: Window) -> None:
        start = int(round(window.start_s * self._rate))
        end = int(round(window.end_s * self._rate))
        fresh = max(start, self._covered.get(window.channel, 0))
        if end > fresh:
            self._stats.add(_measure(window.samples[fresh - start : end - start], self._rate))
            self._covered[window.channel] = end

    def add_samples(self, block: np.ndarray) -> None:
        """A raw (streams, n) or (n,) block; every sample counts."""
        block = np.asarray(block, dtype=np.float32)
        for row in block.reshape(-1, block.shape[-1]) if block.ndim > 1 else [block]:
            self._stats.add(_measure(row, self._rate))

    def result(self) -> RecordingQuality:
        s = self._stats
        n = max(s.n, 1)
        silent_fraction = s.silent / n if s.n else 1.0
        clipped_fraction = s.clipped / n
        return RecordingQuality(
            peak=s.peak,
            rms_db=s.rms_db(),
            clipped_fraction=clipped_fraction,
            silent_fraction=silent_fraction,
            is_silent=s.n == 0 or s.peak < self._floor or silent_fraction >= SILENT_RECORDING_FRACTION,
            is_clipped=clipped_fraction > CLIPPED_RECORDING_FRACTION,
        )
