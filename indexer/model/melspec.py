"""CLAP's log-mel front end in torch, batched and on the model's device.

transformers' ``ClapFeatureExtractor`` computes the same spectrogram frame by frame in numpy
(about 27 ms per 10 s window, single-threaded) and adds random cropping and a random
``is_longer`` flag that would make a vector depend on its batch. This module reproduces only
the deterministic part: pad one window to the extractor's length exactly as it does, then
STFT -> power -> the extractor's own mel filter bank -> dB. Windows longer than the
extractor's maximum are refused rather than cropped at random.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

MEL_FLOOR = 1e-10
"""``audio_utils.spectrogram``'s ``mel_floor`` and ``power_to_db``'s ``min_value``: -100 dB."""


def pad_window(wave: np.ndarray, max_samples: int, padding: str) -> np.ndarray:
    """Pad one window to ``max_samples`` the way ``ClapFeatureExtractor._get_input_mel`` does.

    ``repeatpad`` tiles the clip a whole number of times then zero-pads; ``repeat`` tiles past
    the end and cuts; anything else zero-pads.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"an audio window must be one-dimensional mono samples, got shape {wave.shape}")
    n = wave.shape[0]
    if n == 0:
        raise ValueError("an audio window must hold at least one sample")
    if n > max_samples:
        raise ValueError(
            f"an audio window of {n} samples is longer than the model's maximum of {max_samples}; "
            "cut windows no longer than the model's window before embedding"
        )
    if n < max_samples:
        if padding == "repeat":
            wave = np.tile(wave, max_samples // n + 1)[:max_samples]
        elif padding == "repeatpad":
            wave = np.tile(wave, max_samples // n)
        out = np.zeros(max_samples, dtype=np.float32)
        out[: wave.shape[0]] = wave
        return out
    return wave


class LogMel:
    """Batched log-mel spectrogram matching a ``ClapFeatureExtractor``'s padded, uncropped path.

    ``fusion`` truncation uses the extractor's HTK bank (``mel_filters``, torchaudio's
    defaults); every other truncation uses its Slaney bank (``mel_filters_slaney``, librosa's),
    exactly as the extractor chooses them.
    """

    def __init__(self, feature_extractor: Any, device: torch.device | str = "cpu") -> None:
        fe = feature_extractor
        self.device = torch.device(device)
        self.n_fft = int(fe.fft_window_size)
        self.hop_length = int(fe.hop_length)
        self.sample_rate = int(fe.sampling_rate)
        self.max_samples = int(round(float(fe.max_length_s) * self.sample_rate))
        self.max_window_s = float(fe.max_length_s)
        self.truncation = str(fe.truncation)
        self.padding = str(fe.padding)
        bank = fe.mel_filters if self.truncation == "fusion" else fe.mel_filters_slaney
        # (n_freq, n_mels) in the extractor; stored transposed for (n_mels, n_freq) @ power.
        self._bank = torch.as_tensor(np.asarray(bank).T, dtype=torch.float32, device=self.device).contiguous()
        # periodic Hann, identical to audio_utils.window_function(n_fft, "hann")
        self._window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64).to(
            device=self.device, dtype=torch.float32
        )

    @property
    def n_mels(self) -> int:
        return int(self._bank.shape[0])

    @property
    def n_frames(self) -> int:
        return self.max_samples // self.hop_length + 1

    def pad_batch(self, windows: Sequence[np.ndarray]) -> torch.Tensor:
        """Stack windows into a (B, max_samples) float32 tensor on the device, padded as CLAP expects."""
        batch = np.stack([pad_window(w, self.max_samples, self.padding) for w in windows])
        return torch.from_numpy(batch).to(self.device, non_blocking=True)

    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, max_samples) padded waves -> (B, frames, n_mels) log-mel in dB, float32."""
        spec = torch.stft(
            waves.to(device=self.device, dtype=torch.float32),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self._window,
            center=True,
            pad_mode="reflect",
            onesided=True,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (B, n_freq, frames)
        mel = torch.matmul(self._bank, power).clamp_min(MEL_FLOOR)  # (B, n_mels, frames)
        return (10.0 * torch.log10(mel)).transpose(1, 2).contiguous()

    def features(self, windows: Sequence[np.ndarray]) -> torch.Tensor:
        """Windows (each at most ``max_window_s``) -> (B, frames, n_mels) log-mel on the device."""
        return self(self.pad_batch(windows))
