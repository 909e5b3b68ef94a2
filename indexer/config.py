"""Typed configuration shared by the engine's stages.

One dataclass per concern; the CLI and the app build these from their flags, the engine never
reads flags or environment variables itself (except SOUNDTRACE_ARCHIVE in ``default_archive_dir``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from indexer.errors import UnsupportedPrecisionError

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


Precision = Literal["auto", "fp32", "tf32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "tf32", "bf16", "fp16")

DEFAULT_BATCH = {"cpu": 8, "cuda": 64}
"""Windows per model call when none is asked for: 8 keeps a CPU's latency low and its bits those
of earlier archives; 64 is where an H200's model call stops gaining (issue 21's table)."""

DEFAULT_PRECISION = {"cpu": "fp32", "cuda": "bf16"}
""""auto" per device kind. On CUDA bf16 autocast runs the model call at 3,611 windows/s on an H200
against fp32's 1,996 and fp16's 3,688 (within 2%), and its vectors stay within cosine 0.9999 of
fp32's; bf16 keeps fp32's exponent range, so real weights cannot overflow to inf/NaN as fp16's
can. On a CPU fp32 stays: it is what earlier archives hold, and autocast there buys little."""

CPU_PRECISIONS = ("fp32", "bf16")


def resolve_precision(asked: str, device_kind: str) -> str:
    """The precision a model on ``device_kind`` ("cpu" or "cuda") runs at: "auto" by device kind;
    tf32 and fp16 exist only on a GPU (DeviceError, an ``UnsupportedPrecisionError``)."""
    asked = (asked or "auto").strip().lower()
    if asked not in PRECISIONS:
        raise UnsupportedPrecisionError(f"Precision '{asked}' is not known; use auto, fp32, tf32, bf16 or fp16.")
    if asked == "auto":
        return DEFAULT_PRECISION.get(device_kind, "fp32")
    if device_kind != "cuda" and asked not in CPU_PRECISIONS:
        raise UnsupportedPrecisionError(
            f"Precision {asked} needs a CUDA GPU; on the CPU use fp32 (the default) or bf16."
        )
    return asked


@dataclass(frozen=True)
class EncoderConfig:
    """Which CLAP to load and where to run it."""

    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    """Windows per model call; None: the device's default (``DEFAULT_BATCH``)."""
    cache_dir: str | None = None
    threads: int | None = None
    precision: Precision = "auto"
    """fp32, tf32 (CUDA), bf16 or fp16 (CUDA) for the model call; "auto": ``DEFAULT_PRECISION``."""
    gpu_memory_gb: float | None = None
    """GPU memory the archive's vectors may keep resident for audits and suggestions on CUDA;
    None: 80% of what is free when the first scan starts (``ResidentVectors``)."""

    def or_default_model(self) -> "EncoderConfig":
        """This configuration, naming the default CLAP where it names no model (the flags' "")."""
        return self if self.model else replace(self, model=DEFAULT_MODEL)

    def for_device(self, device_kind: str) -> "EncoderConfig":
        """This configuration with its batch size and precision decided for ``device_kind``
        ("cpu" or "cuda"), so every reader of ``batch_size`` gets an int."""
        batch = self.batch_size if self.batch_size is not None else DEFAULT_BATCH.get(device_kind, DEFAULT_BATCH["cpu"])
        if batch < 1:
            raise ValueError("batch_size must be at least 1")
        return replace(self, batch_size=int(batch), precision=resolve_precision(self.precision, device_kind))


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
