"""The arithmetic a model call runs at: fp32, TF32 matmuls, or bf16/fp16 autocast.

Which precision "auto" means per device, and which a CPU refuses, is decided in one place,
``indexer.config.resolve_precision`` (torch-free, so the Ray engine decides it too); this module
only applies the decision around the model call. The mel front end stays outside it, in fp32.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from indexer.config import resolve_precision

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def model_precision(asked: str, device: torch.device) -> str:
    """fp32, tf32, bf16 or fp16 for a model on ``device``; ``UnsupportedPrecisionError`` for one
    the device cannot run (tf32 or fp16 on a CPU)."""
    return resolve_precision(asked, device.type)


@contextlib.contextmanager
def running_at(precision: str, device: torch.device) -> Iterator[None]:
    """For the duration of one model call: TF32 allowed (the global flags restored after, so
    nothing else in the process changes), or autocast to bf16/fp16; fp32 does nothing."""
    if precision == "tf32":
        with _tf32_allowed():
            yield
    elif precision in AUTOCAST_DTYPES:
        with torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision]):
            yield
    else:
        yield


@contextlib.contextmanager
def _tf32_allowed() -> Iterator[None]:
    """torch ≥ 2.9 names it ``fp32_precision = "tf32"``; older ones ``allow_tf32 = True`` (mixing
    the two spellings is refused by the newer ones, so only the one that exists is used)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        flags = [matmul, cudnn] + [getattr(cudnn, part) for part in ("conv", "rnn") if hasattr(cudnn, part)]
        saved = [(flag, flag.fp32_precision) for flag in flags]
        matmul.fp32_precision, cudnn.fp32_precision = "tf32", "tf32"
        try:
            yield
        finally:
            for flag, value in saved:  # parents first: setting one also sets its children
                flag.fp32_precision = value
    else:
        saved_legacy = (matmul.allow_tf32, cudnn.allow_tf32)
        matmul.allow_tf32, cudnn.allow_tf32 = True, True
        try:
            yield
        finally:
            matmul.allow_tf32, cudnn.allow_tf32 = saved_legacy
