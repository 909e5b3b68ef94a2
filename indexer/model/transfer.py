"""Pinned host memory between numpy windows and a CUDA model, so copies overlap the model call.

A batch's padded windows are written into a page-locked (pinned) buffer and copied to the GPU
without blocking; its vectors come back into another pinned buffer the same way, and a CUDA event
says when they have arrived. Two such slots take turns: while the GPU runs one batch, the CPU
fills the other. A slot is written again only after its previous batch's vectors were taken out
(waiting on its event), so a copy still in flight never reads a half-overwritten buffer.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np
import torch

SLOTS = 2
"""Batches in flight at once: one on the GPU, one being prepared."""


class _Slot:
    def __init__(self, rows: int, samples: int, dim: int, device: torch.device) -> None:
        cuda = device.type == "cuda"
        self.waves = torch.empty((rows, samples), dtype=torch.float32, pin_memory=cuda)
        self.vectors = torch.empty((rows, dim), dtype=torch.float32, pin_memory=cuda)
        self.done = torch.cuda.Event() if cuda else _Reached()
        """Recorded after the vectors' copy back, which follows everything that read ``waves``."""
        self.owner: CudaPending | None = None


class _Reached:
    """An event already reached: off CUDA (tests of the slots' order) every copy is synchronous."""

    def record(self, stream: object = None) -> None:
        pass

    def synchronize(self) -> None:
        pass


class CudaPending:
    """The vectors of one batch on their way back from the GPU (a ``PendingVectors``)."""

    def __init__(self, slot: _Slot, rows: int, lock: threading.RLock) -> None:
        self._slot = slot
        self._rows = rows
        self._lock = lock
        self._vectors: np.ndarray | None = None

    def result(self) -> np.ndarray:
        with self._lock:
            if self._vectors is None:
                self._slot.done.synchronize()
                self._vectors = self._slot.vectors[: self._rows].numpy().copy()
                if self._slot.owner is self:
                    self._slot.owner = None
            return self._vectors


class PinnedStaging:
    """The slots of one encoder on one CUDA device; ``launch`` runs a batch through them."""

    def __init__(self, rows: int, samples: int, dim: int, device: torch.device) -> None:
        self.rows, self.samples, self.dim, self.device = rows, samples, dim, device
        self._slots: list[_Slot] = []
        self._next = 0
        self._lock = threading.RLock()  # the app shares one encoder between sessions' threads

    def launch(self, padded: list[np.ndarray], rows: int, compute: Callable[[torch.Tensor], torch.Tensor]) -> CudaPending:
        """Copy ``padded`` (exactly ``self.rows`` windows of ``samples``) to the GPU, queue
        ``compute(waves) -> (rows, dim) float32 unit vectors`` and their copy back; returns at once.
        The first ``rows`` vectors are the result."""
        with self._lock:
            slot = self._take()
            host = slot.waves.numpy()
            for i, wave in enumerate(padded):
                host[i] = wave
            waves = slot.waves.to(self.device, non_blocking=True)
            vectors = compute(waves)
            slot.vectors.copy_(vectors, non_blocking=True)
            slot.done.record(torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None)
            pending = CudaPending(slot, rows, self._lock)
            slot.owner = pending
            return pending

    def _take(self) -> _Slot:
        """The next slot, once whatever it last carried has come back."""
        if len(self._slots) < SLOTS:
            self._slots.append(_Slot(self.rows, self.samples, self.dim, self.device))
            return self._slots[-1]
        slot = self._slots[self._next]
        self._next = (self._next + 1) % SLOTS
        if slot.owner is not None:
            slot.owner.result()  # keeps its vectors; the buffer is free again
        slot.done.synchronize()
        return slot
