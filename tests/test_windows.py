"""Windowing: exact times, tail rules, repeat padding, quality figures and flags, streaming."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soxr

from indexer.audio.decode import stream
from indexer.config import SAMPLE_RATE, WindowConfig
from indexer.audio.windows import (
    CLIPPED_RECORDING_FRACTION,
    RMS_FLOOR_DB,
    QualityAccumulator,
    Window,
    cut_windows,
    repeat_pad,
)

RATE = 8_000  # small rate keeps the tests fast; cut_windows takes any rate
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def sine(seconds: float, freq: float = 440.0, amp: float = 0.5, rate: int = RATE) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * rate))) / rate)).astype(np.float32)


def in_blocks(x: np.ndarray, size: int) -> Iterator[np.ndarray]:
    x = x if x.ndim == 2 else x[None, :]
    for i in range(0, x.shape[1], size):
        yield x[:, i : i + size]


def cut(x: np.ndarray, cfg: WindowConfig, block: int = 3_000) -> list[Window]:
    return list(cut_windows(in_blocks(x, block), cfg, RATE))


def spans(ws: list[Window]) -> list[tuple[float, float]]:
    return [(w.start_s, w.end_s) for w in ws]


# --- times and tails ------------------------------------------------------------------------------


def test_hop_equal_to_length() -> None:
    ws = cut(sine(25), WindowConfig(10, 10, 1))
    assert spans(ws) == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert all(w.samples.shape == (10 * RATE,) and w.samples.dtype == np.float32 for w in ws)


def test_overlapping_hop() -> None:
    ws = cut(sine(22), WindowConfig(10, 5, 1))
    assert spans(ws) == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 22.0)]
    ws = cut(sine(12.5), WindowConfig(4, 1.5, 1))
    assert [w.start_s for w in ws] == [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0]
    assert ws[-1].end_s == 12.5 and ws[-2].end_s == 11.5  # tail 9-12.5 s adds 11.5-12.5 s


def test_tail_shorter_than_min_tail_is_dropped() -> None:
    assert spans(cut(sine(20.5), WindowConfig(10, 10, 1))) == [(0.0, 10.0), (10.0, 20.0)]
    assert spans(cut(sine(21.0), WindowConfig(10, 10, 1))) == [(0.0, 10.0), (10.0, 20.0), (20.0, 21.0)]
    assert spans(cut(sine(20.0), WindowConfig(10, 10, 1))) == [(0.0, 10.0), (10.0, 20.0)]


def test_tail_with_nothing_new_is_dropped() -> None:
    # 20 s, hop 5: the window at 15 s would only repeat content the 10-20 s window already holds
    assert spans(cut(sine(20), WindowConfig(10, 5, 1))) == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0)]


def test_clip_shorter_than_everything_gets_one_window() -> None:
    x = sine(0.3, amp=0.8)
    ws = cut(x, WindowConfig(10, 10, 1))
    assert spans(ws) == [(0.0, 0.3)]
    n, length = x.shape[0], 10 * RATE
    reps = length // n
    for k in range(reps):
        np.testing.assert_array_equal(ws[0].samples[k * n : (k + 1) * n], x)
    assert not ws[0].samples[reps * n :].any()
    assert cut(np.zeros(0, np.float32), WindowConfig()) == []


def test_window_count_does_not_depend_on_block_size() -> None:
    rng = np.random.default_rng(5)
    x = (0.1 * rng.standard_normal((2, 37 * RATE + 123))).astype(np.float32)
    cfg = WindowConfig(10, 3, 1)
    reference = cut(x, cfg, block=x.shape[1])
    for block in (1, 999, 8_000, 45_000, 200_000):
        ws = cut(x, cfg, block=block)
        assert spans(ws) == spans(reference) and [w.channel for w in ws] == [w.channel for w in reference]
        for a, b in zip(ws, reference):
            np.testing.assert_array_equal(a.samples, b.samples)
            assert a.quality == b.quality


def test_channels_ordered_by_start_then_channel_and_deterministic() -> None:
    x = np.stack([sine(25, 440), sine(25, 1000, 0.1)])
    ws = cut(x, WindowConfig(10, 10, 1))
    assert [(w.start_s, w.channel) for w in ws] == [(0, 0), (0, 1), (10, 0), (10, 1), (20, 0), (20, 1)]
    assert ws[0].quality.rms_db > ws[1].quality.rms_db  # the channels keep their own content
    again = cut(x, WindowConfig(10, 10, 1))
    assert [(w.start_s, w.end_s, w.channel, w.quality) for w in again] == [
        (w.start_s, w.end_s, w.channel, w.quality) for w in ws
    ]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(ws, again))


def test_windows_do_not_alias_the_input() -> None:
    x = sine(12)
    ws = cut(x, WindowConfig(10, 10, 1), block=x.shape[0])
    x[:] = 0
    assert ws[0].samples.any()


def test_memory_is_bounded_by_the_window_not_the_recording() -> None:
    block = sine(1.0)

    def forever() -> Iterator[np.ndarray]:
        for _ in range(1_800):  # 30 minutes
            yield block[None, :]

    tracemalloc.start()
    try:
        count = sum(1 for _ in cut_windows(forever(), WindowConfig(10, 5, 1), RATE))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 359
    assert peak < 10 * 10 * RATE * 4  # a handful of windows, not 30 minutes (57.6 MB)


# --- repeat padding -------------------------------------------------------------------------------


def test_repeat_pad() -> None:
    x = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(repeat_pad(x, 8), [1, 2, 3, 1, 2, 3, 0, 0])
    np.testing.assert_array_equal(repeat_pad(x, 6), [1, 2, 3, 1, 2, 3])
    np.testing.assert_array_equal(repeat_pad(x, 2), [1, 2])
    np.testing.assert_array_equal(repeat_pad(np.zeros(0, np.float32), 3), [0, 0, 0])
    assert repeat_pad(x, 8).dtype == np.float32


def test_tail_is_repeat_padded() -> None:
    x = np.arange(1, 10 * RATE + int(3.5 * RATE) + 1, dtype=np.float32) / 1e6
    tail = cut(x, WindowConfig(10, 10, 1))[-1]
    content = x[10 * RATE :]
    assert (tail.start_s, tail.end_s) == (10.0, 13.5)
    np.testing.assert_array_equal(tail.samples[: content.size], content)
    np.testing.assert_array_equal(tail.samples[content.size : 2 * content.size], content)
    assert not tail.samples[3 * content.size :].any()  # 10 // 3.5 = 2 copies, then zeros


# --- quality figures ------------------------------------------------------------------------------


def test_quality_of_known_sines() -> None:
    full = cut(sine(10, 1000, amp=1.0), WindowConfig(10, 10, 1))[0].quality
    assert full.rms_db == pytest.approx(-3.0103, abs=0.01)
    assert full.peak == pytest.approx(1.0, abs=1e-6)
    half = cut(sine(10, 1000, amp=0.5), WindowConfig(10, 10, 1))[0].quality
    assert half.rms_db == pytest.approx(-9.0309, abs=0.01)
    assert (half.clipped_fraction, half.silent_fraction) == (0.0, 0.0)


def test_digital_silence_has_the_floor() -> None:
    q = cut(np.zeros(10 * RATE, np.float32), WindowConfig(10, 10, 1))[0].quality
    assert (q.rms_db, q.peak, q.clipped_fraction, q.silent_fraction) == (RMS_FLOOR_DB, 0.0, 0.0, 1.0)


def test_silent_fraction() -> None:
    x = np.concatenate([sine(2.5), np.zeros(5 * RATE, np.float32), sine(2.5, amp=5e-4)])  # last: -69 dBFS
    q = cut(x, WindowConfig(10, 10, 1))[0].quality
    assert q.silent_fraction == pytest.approx(0.75)


def test_quality_ignores_padding() -> None:
    # 0.7 s of tone in a 1 s window: one copy plus 0.3 s of zeros that must not count as silence
    q = cut(sine(0.7), WindowConfig(1, 1, 0.5))[0].quality
    assert q.rms_db == pytest.approx(-9.03, abs=0.02)
    assert q.silent_fraction == 0.0


def _clipped_tone(rate: int) -> np.ndarray:
    return np.clip(4 * sine(10, 440, 1.0, rate), -1, 1)


@pytest.mark.parametrize("rate, kept", [(8_000, 0.55), (16_000, 0.85), (22_050, 0.9), (44_100, 0.95)])
def test_clipping_survives_resampling(rate: int, kept: float) -> None:
    """Resampling turns clipped plateaus into ripples around 1.0 (only about half of them stay
    >= 1.0); counting from 0.99 keeps most of the true clipped fraction."""
    x = _clipped_tone(rate)
    true_fraction = np.mean(np.abs(x) >= 1.0)
    y = soxr.resample(x, rate, SAMPLE_RATE, "HQ").astype(np.float32)
    acc = QualityAccumulator()
    for w in cut_windows([y[None, :]], WindowConfig(), SAMPLE_RATE):
        acc.add_window(w)
        assert w.quality.clipped_fraction > kept * true_fraction
    assert acc.result().clipped_fraction > kept * true_fraction
    assert acc.result().is_clipped


def test_clean_loud_audio_is_not_clipped() -> None:
    acc = QualityAccumulator(RATE)
    for w in cut(sine(20, amp=0.9), WindowConfig()):
        acc.add_window(w)
    r = acc.result()
    assert r.clipped_fraction == 0.0 and not r.is_clipped and not r.is_silent


def test_recording_flags() -> None:
    def result(x: np.ndarray) -> tuple[bool, bool]:
        acc = QualityAccumulator(RATE)
        acc.add_samples(x)
        r = acc.result()
        return r.is_silent, r.is_clipped

    rng = np.random.default_rng(1)
    assert result(np.zeros(30 * RATE, np.float32)) == (True, False)
    assert result((2e-5 * rng.standard_normal(30 * RATE)).astype(np.float32)) == (True, False)  # dither only
    blip = np.zeros(60 * RATE, np.float32)
    blip[: int(0.3 * RATE)] = sine(0.3)  # 0.5 % of a dead minute
    assert result(blip) == (True, False)
    assert result(sine(30)) == (False, False)
    burst = sine(30, amp=0.5)
    burst[: int(0.01 * 30 * RATE)] = 1.0  # 1 % of samples pinned at full scale
    assert result(burst) == (False, True)
    assert CLIPPED_RECORDING_FRACTION < 0.01


def test_silence_floor_flags_a_quiet_but_steady_line() -> None:
    hum = sine(30, 50, amp=0.004)  # -51 dBFS: its frames are not silent, its peak is below 0.01
    strict = QualityAccumulator(RATE, silence_floor=0.01)
    default = QualityAccumulator(RATE)
    for acc in (strict, default):
        acc.add_samples(hum)
    assert strict.result().silent_fraction == 0.0 and strict.result().is_silent
    assert not default.result().is_silent


def test_accumulator_counts_overlap_once() -> None:
    x = np.concatenate([sine(5), np.zeros(15 * RATE, np.float32)])
    by_window = QualityAccumulator(RATE)
    ws = cut(x, WindowConfig(10, 5, 1))
    assert len(ws) == 3
    for w in ws:
        by_window.add_window(w)
    by_samples = QualityAccumulator(RATE)
    for b in in_blocks(x, 4_321):
        by_samples.add_samples(b)
    a, b = by_window.result(), by_samples.result()
    assert a.silent_fraction == pytest.approx(0.75)
    assert b.silent_fraction == pytest.approx(0.75, abs=2e-3)  # 50 ms frames restart at each block
    assert a.rms_db == pytest.approx(b.rms_db, abs=1e-6)
    assert a.peak == b.peak


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="run data/make_samples.py first")
def test_flags_on_project_samples() -> None:
    def flags(name: str) -> tuple[bool, bool]:
        _, blocks = stream(SAMPLES / name)
        acc = QualityAccumulator()
        for w in cut_windows(blocks, WindowConfig()):
            acc.add_window(w)
        r = acc.result()
        return r.is_silent, r.is_clipped

    assert flags("silence_10s.flac") == (True, False)
    assert flags("clipped_speech.flac") == (False, True)
    assert flags("greeting_polite.opus") == (False, False)
    assert flags("tone_1khz_25s.opus") == (False, False)
