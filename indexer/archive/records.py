"""Plain rows handed between the pipeline's stages and the catalog (no database imports here,
so the decoding process stays quick to start)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RecordingRow:
    """What the pipeline writes for one file, indexed or failed."""

    path: str
    content_hash: str | None
    size_bytes: int
    mtime: float
    status: str
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    format: str | None = None
    decoder: str | None = None
    error_kind: str | None = None
    error: str | None = None
    peak: float | None = None
    rms_db: float | None = None
    clipped_fraction: float | None = None
    silent_fraction: float | None = None
    is_silent: bool | None = None
    is_clipped: bool | None = None


@dataclass(frozen=True)
class WindowRows:
    """Columnar window data for one recording; ``vectors`` is (n, dim) float32."""

    channel: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    rms_db: np.ndarray
    peak: np.ndarray
    clipped_fraction: np.ndarray
    silent_fraction: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.start_s)


@dataclass(frozen=True)
class KnownFile:
    recording_id: int
    size_bytes: int
    mtime: float
    content_hash: str | None
    status: str
