"""Writing small test recordings with known content at known times."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

RATE = 16_000


def tone(frequency: float, seconds: float, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write_sequence(path: Path, segments: Sequence[tuple[float, float]], rate: int = RATE) -> Path:
    """A file of consecutive tones: [(frequency, seconds), ...]; frequency 0 is silence."""
    parts = [tone(f, s, rate) if f else np.zeros(int(round(s * rate)), np.float32) for f, s in segments]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.concatenate(parts), rate)
    return path
