"""The archive's float16 rows kept in GPU memory for the life of a process, within a budget.

A scan on a GPU otherwise sends every row over PCIe again each time (about 1 GB per million
windows); resident, an audit of ten labels over a million windows is a product the GPU does in
milliseconds. Rows are kept per stored block, named by (segment file, first row) and checked
against the block's live ids on every use, so windows added since (new blocks, a grown segment)
or deleted since (fewer live ids) are uploaded again and nothing stale is ever scored. An archive
larger than the budget keeps what fits and streams the rest on each scan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

FREE_SHARE = 0.8
"""Of the GPU memory free when residency starts, the share the rows may take by default."""


@dataclass
class ResidencyStats:
    """What residency cost and saved, for ``info`` and the benchmarks."""

    resident_bytes: int = 0
    uploaded_bytes: int = 0
    upload_seconds: float = 0.0
    streamed_bytes: int = 0
    """Bytes sent for a scan and dropped after it: the part of the archive over the budget."""
    hits: int = 0


@dataclass
class _Entry:
    ids: np.ndarray
    rows: torch.Tensor


class ResidentVectors:
    """Stored blocks' live rows on ``device``, uploaded on first use, at most ``budget_bytes``."""

    def __init__(self, device: torch.device, budget_bytes: int | None = None):
        self.device = device
        if budget_bytes is None:
            budget_bytes = int(torch.cuda.mem_get_info(device)[0] * FREE_SHARE) if device.type == "cuda" else 0
        self.budget_bytes = int(budget_bytes)
        self.stats = ResidencyStats()
        self._blocks: dict[tuple[str, int], _Entry] = {}

    def rows(self, block) -> torch.Tensor:
        """The block's live rows (float16) on the device: kept ones if still the same windows."""
        entry = self._blocks.get(block.key)
        if entry is not None and np.array_equal(entry.ids, block.ids):
            self.stats.hits += 1
            return entry.rows
        if entry is not None:  # windows added to or deleted from the block since it was uploaded
            self._drop(block.key)
        started = time.perf_counter()
        host = torch.from_numpy(np.array(block.rows(), np.float16, copy=True))
        rows = host.to(self.device)
        size = rows.numel() * rows.element_size()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stats.upload_seconds += time.perf_counter() - started
        self.stats.uploaded_bytes += size
        if self.stats.resident_bytes + size <= self.budget_bytes:
            self._blocks[block.key] = _Entry(np.array(block.ids, copy=True), rows)
            self.stats.resident_bytes += size
        else:
            self.stats.streamed_bytes += size
        return rows

    def keep_only(self, keys: set[tuple[str, int]]) -> None:
        """Forget blocks no longer stored (a segment rewritten by compaction, a file gone)."""
        for key in [k for k in self._blocks if k not in keys]:
            self._drop(key)

    def _drop(self, key: tuple[str, int]) -> None:
        entry = self._blocks.pop(key)
        self.stats.resident_bytes -= entry.rows.numel() * entry.rows.element_size()

    def __len__(self) -> int:
        return len(self._blocks)
