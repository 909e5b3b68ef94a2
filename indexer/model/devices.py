"""Where the model runs: a device chosen by name."""

from __future__ import annotations

import torch

from indexer.errors import DeviceError


def resolve_device(spec: str) -> torch.device:
    """"auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N"; DeviceError if absent."""
    s = (spec or "auto").strip().lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        index_text = s.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise DeviceError(f"Device '{spec}' is not valid; use auto, cpu, cuda or cuda:N with N a GPU number.")
        if not torch.cuda.is_available():
            raise DeviceError(f"Device '{spec}' was requested but torch sees no CUDA GPU on this machine; use --device cpu or auto.")
        count = torch.cuda.device_count()
        index = int(index_text) if index_text else 0
        if index >= count:
            raise DeviceError(f"Device '{spec}' does not exist: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}.")
        return torch.device("cuda", index)
    raise DeviceError(f"Device '{spec}' is not known; use auto, cpu, cuda or cuda:N.")
