"""Query vectors against stored float16 rows, one fixed-shape block at a time, on the CPU or a GPU.

Every product has one shape (``block_rows`` rows by the queries) and a row keeps its slot in it,
because a BLAS rounds a row differently with the matrix's shape (small ones take other kernels):
so a window scores the same bits whichever others are read with it, and scoring a few recordings
again matches a full run. torch, because it converts float16 with the CPU's vector instructions
(0.15 s per million 512-d rows, FAISS's decoder 0.32 s, numpy 1.0 s) and multiplies a
16,384-row block by ten queries in 1.5 ms on two cores (OpenBLAS through numpy: 4.0 ms), with the
same bits as numpy's product here; and because the same code runs on a GPU, where the rows can
stay resident (``ResidentVectors``) between scans.
"""

from __future__ import annotations

import warnings
from typing import Protocol

import numpy as np
import torch

from indexer.model.devices import resolve_device
from indexer.model.resident_vectors import ResidentVectors


DEFAULT_BLOCK_ROWS = 16_384
"""Rows per product: big enough that BLAS's ordinary kernels run, small enough to stay in cache."""


class Block(Protocol):
    """A block of stored rows (``archive.vector_store.StoredBlock``)."""

    key: tuple[str, int]
    ids: np.ndarray

    def rows(self) -> np.ndarray: ...


class BlockProduct:
    """``queries @ rows.T`` for blocks of up to ``block_rows`` stored rows on ``device``."""

    def __init__(self, queries: np.ndarray, block_rows: int, device: str = "cpu", resident: ResidentVectors | None = None):
        self.device = resolve_device(device)
        self.resident = resident
        self.block_rows = int(block_rows)
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        with torch.inference_mode():
            self.queries = torch.from_numpy(queries).to(self.device)
            # zeros at first, then earlier blocks' rows: every slot always holds finite numbers
            self.rows32 = torch.zeros((block_rows, queries.shape[1]), dtype=torch.float32, device=self.device)
            self.scores = torch.empty((block_rows, len(queries)), dtype=torch.float32, device=self.device)

    @property
    def kind(self) -> str:
        """"cuda" or "cpu": a GPU rounds the last bits its own way, so a saved run records which."""
        return self.device.type

    def __call__(self, block: Block, slots: np.ndarray, picked: np.ndarray | None = None) -> np.ndarray:
        """(queries, len(slots)) float32 scores of the block's live rows ``picked`` (positions in
        ``block.ids``; None: all of them), the i-th placed at slot ``slots[i]`` of the product."""
        with torch.inference_mode():
            rows = self._rows16(block)
            if picked is None and len(slots) == len(rows) and (len(slots) == 0 or slots[-1] == len(slots) - 1):
                self.rows32[: len(rows)].copy_(rows)  # every live row, in order from slot 0: converted in place
            else:
                chosen = rows if picked is None else rows[self._index(picked)]
                self.rows32[self._index(slots)] = chosen.to(torch.float32)
            torch.mm(self.rows32, self.queries.T, out=self.scores)
            picked_scores = self.scores[: len(slots)] if _is_prefix(slots) else self.scores[self._index(slots)]
            return picked_scores.T.cpu().numpy().copy()  # the buffer is the next block's

    def _rows16(self, block: Block) -> torch.Tensor:
        if self.resident is not None:
            return self.resident.rows(block)
        with warnings.catch_warnings():  # a read-only memory map: torch only reads it
            warnings.simplefilter("ignore", UserWarning)
            rows = torch.from_numpy(np.ascontiguousarray(block.rows()))
        return rows.to(self.device, non_blocking=True) if self.device.type != "cpu" else rows

    def _index(self, positions: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(positions, np.int64)).to(self.device)


def _is_prefix(slots: np.ndarray) -> bool:
    return len(slots) == 0 or (slots[0] == 0 and slots[-1] == len(slots) - 1 and bool((np.diff(slots) == 1).all()))
