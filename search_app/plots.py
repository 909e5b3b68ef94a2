"""Pictures of audio and scores for the pages: waveform, mel spectrogram, score histogram.

Plain ``matplotlib.figure.Figure`` objects (no pyplot state, safe across Streamlit's threads);
the spectrogram is a small numpy STFT, for looking at, not the model's own front end.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

WINDOW_COLOUR = "tab:blue"
HIGHLIGHT_COLOUR = "tab:orange"
THRESHOLD_COLOUR = "tab:red"
_MAX_POINTS = 4000


def hit_figure(
    samples: np.ndarray, rate: int, offset_s: float, window: tuple[float, float],
    highlight: tuple[float, float] | None = None,
) -> Figure:
    """Waveform over mel spectrogram of some context, the hit window shaded, the highlight marked."""
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    wave_ax, spec_ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.4])
    _waveform(wave_ax, samples, rate, offset_s)
    _mel_spectrogram(spec_ax, samples, rate, offset_s)
    for ax in (wave_ax, spec_ax):
        ax.axvspan(*window, color=WINDOW_COLOUR, alpha=0.15, label="hit window")
        if highlight is not None:
            ax.axvspan(*highlight, facecolor="none", edgecolor=HIGHLIGHT_COLOUR, linewidth=2, label="highlight")
    wave_ax.legend(loc="upper right", fontsize="small")
    spec_ax.set_xlabel("seconds")
    return fig


def waveform_figure(samples: np.ndarray, rate: int, span: tuple[float, float] | None = None) -> Figure:
    """A whole (uploaded) recording's waveform, optionally with one span shaded."""
    fig = Figure(figsize=(9, 2), layout="constrained")
    ax = fig.subplots()
    _waveform(ax, samples, rate, 0.0)
    if span is not None:
        ax.axvspan(*span, color=HIGHLIGHT_COLOUR, alpha=0.25)
    ax.set_xlabel("seconds")
    return fig


def histogram_figure(scores: np.ndarray, threshold: float, label: str) -> Figure:
    """How a label's best scores spread over the recordings, with the threshold as a line."""
    fig = Figure(figsize=(7, 2.8), layout="constrained")
    ax = fig.subplots()
    bins = int(np.clip(len(scores) // 4, 10, 60))
    ax.hist(scores, bins=bins, color="tab:gray")
    ax.axvline(threshold, color=THRESHOLD_COLOUR, linewidth=2, label=f"threshold {threshold:.3f}")
    ax.set_xlabel(f"best score for '{label}' (cosine)")
    ax.set_ylabel("recordings")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts are whole recordings
    ax.legend(loc="upper left", fontsize="small")
    return fig


def _waveform(ax, samples: np.ndarray, rate: int, offset_s: float) -> None:
    x = np.asarray(samples, np.float32)
    if len(x) > _MAX_POINTS:  # min/max envelope: every peak stays visible at any length
        per = int(np.ceil(len(x) / _MAX_POINTS))
        padded = np.pad(x, (0, per * _MAX_POINTS - len(x)), mode="edge").reshape(_MAX_POINTS, per)
        t = offset_s + (np.arange(_MAX_POINTS) * per) / rate
        ax.fill_between(t, padded.min(axis=1), padded.max(axis=1), color="tab:gray", linewidth=0)
    else:
        ax.plot(offset_s + np.arange(len(x)) / rate, x, color="tab:gray", linewidth=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlim(offset_s, offset_s + max(len(x), 1) / rate)  # no margin: a band to the end reaches the edge
    ax.set_ylabel("amplitude")


def _mel_spectrogram(ax, samples: np.ndarray, rate: int, offset_s: float, n_mels: int = 64) -> None:
    n_fft, hop = 1024, max(1, rate // 100)
    x = np.asarray(samples, np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    mel = power @ _mel_filters(rate, n_fft, n_mels).T
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80)
    end = offset_s + len(samples) / rate
    ax.imshow(db.T, origin="lower", aspect="auto", extent=(offset_s, end, 0, n_mels), cmap="magma")
    ax.set_ylabel("mel band")


def _mel_filters(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters evenly spaced on the mel scale from 0 Hz to Nyquist."""
    to_mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    to_hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = to_hz(np.linspace(0, to_mel(rate / 2), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1 / rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - freqs) / np.maximum(upper - centre, 1e-9)
    return np.maximum(0, np.minimum(rising, falling))
