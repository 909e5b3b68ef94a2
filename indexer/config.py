"""Typed configuration shared by the engine's stages.

One dataclass per concern; the CLI and the app build these from their flags, the engine never
reads flags or environment variables itself (except SOUNDTRACE_ARCHIVE in ``default_archive_dir``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

SAMPLE_RATE = 48_000
"""CLAP's audio encoder works on 48 kHz mono; every decoder resamples to this."""

DEFAULT_MODEL = "laion/clap-htsat-fused"

REQUEST_MAX_DURATION_S = 3600.0
"""Most audio one request decodes: classify, search --like and the app's uploads (``index`` has
``DecodeOptions.max_duration_s``, 48 h). Memory stays flat either way; this bounds the time a
file with a lying header (a 288 KB WAV claiming 40 hours) can cost."""

ChannelMode = Literal["mix", "split"]


@dataclass(frozen=True)
class RawPcmFormat:
    """Parameters a headerless raw PCM file cannot tell us itself."""

    sample_rate: int
    channels: int = 1
    sample_format: Literal["s16le", "s16be", "s24le", "s32le", "f32le", "u8"] = "s16le"


@dataclass(frozen=True)
class DecodeOptions:
    """How recordings become 48 kHz float32 streams."""

    channels: ChannelMode | None = None
    """mix (downmix to mono) or split (each channel its own stream); None: an archive's own mode, else mix."""
    raw: RawPcmFormat | None = None
    raw_extensions: tuple[str, ...] = (".raw", ".pcm")
    max_duration_s: float = 48 * 3600.0
    block_s: float = 30.0
    silence_floor: float = 1e-4


@dataclass(frozen=True)
class WindowConfig:
    """Fixed windows cut before the model sees anything, so batching cannot change a vector."""

    length_s: float = 10.0
    hop_s: float = 10.0
    min_tail_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.5 <= self.length_s <= 10.0:
            raise ValueError("window length must be between 0.5 and 10 seconds (CLAP sees at most 10 s)")
        if not 0 < self.hop_s <= self.length_s:
            raise ValueError("hop must be positive and no longer than the window")


@dataclass(frozen=True)
class EncoderConfig:
    """Which CLAP to load and where to run it."""

    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = "auto"
    batch_size: int = 8
    cache_dir: str | None = None
    threads: int | None = None

    def or_default_model(self) -> "EncoderConfig":
        """This configuration, naming the default CLAP where it names no model (the flags' "")."""
        return self if self.model else replace(self, model=DEFAULT_MODEL)


@dataclass(frozen=True)
class RayOptions:
    """Where and how ``index --engine ray`` runs: the cluster, the actor pool, the shards' folder."""

    address: str | None = None
    """A running cluster (``ray://host:10001`` or ``auto``); None starts a local Ray instance."""
    workers: int | None = None
    """Model actors; None: one per GPU share when GPUs are asked for, else one per CPU."""
    gpus_per_worker: float = 0.0
    cpus_per_worker: int = 1
    """CPU cores (and torch threads) per model actor."""
    staging: Path | None = None
    """Folder of finished shards; None: ``staging`` inside the archive."""

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 1:
            raise ValueError("gpus per worker must be ≥ 0 and cpus per worker ≥ 1")


def default_archive_dir() -> Path:
    return Path(os.environ.get("SOUNDTRACE_ARCHIVE", "./soundtrace-archive"))
