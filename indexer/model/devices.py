"""Where the model runs: a device chosen by name, and the GPU matrix product audits use there."""

from __future__ import annotations

from typing import Callable

import numpy as np
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


def gpu_matmul(device: torch.device | str, chunk_rows: int = 1 << 18) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """``queries @ matrix.T`` on a CUDA device, streamed in row chunks to bound GPU memory; None off
    the GPU, where numpy's BLAS is as fast. Full-archive audits use it with ``--device cuda``; a
    device this machine lacks is a DeviceError."""
    device = resolve_device(str(device))
    return _chunked_product(device, chunk_rows) if device.type == "cuda" else None


def _chunked_product(device: torch.device, chunk_rows: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def product(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device)
        out = np.empty((queries.shape[0], matrix.shape[0]), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, matrix.shape[0], chunk_rows):
                block = torch.from_numpy(np.ascontiguousarray(matrix[start : start + chunk_rows])).to(device, non_blocking=True)
                out[:, start : start + block.shape[0]] = (q @ block.T).cpu().numpy()
        return out

    return product
