"""The approximate-nearest-neighbour index over the stored vectors, and its record.

An inverted file (IVF, HNSW coarse quantizer) of 4-bit fast-scan PQ codes, whose ids are window
ids. It only proposes candidates; ``VectorStore`` re-scores them from the stored float16 rows, so
PQ's coarse distances decide which windows are looked at, never the scores people see. Its
parameters, and the recall and latency they gave at build time, are in ``ann.json`` beside it;
it is built aside and swapped in by renaming that record, so searches never wait for a build.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from indexer.archive.durable import replace_atomically
from indexer.archive.segments import SEGMENTS_DIR

ANN_RECORD = "ann.json"


@dataclass(frozen=True)
class AnnRecord:
    """What was built and what it measured: shown by ``soundtrace info``."""

    file: str
    factory: str
    nlist: int
    nprobe: int
    candidates: int
    """Candidates re-scored exactly per query, at least; more for a larger k."""
    covers_below: int
    """Window ids below this are in the index; newer windows are scanned exactly until the next build."""
    windows: int
    trained_on: int
    recall: float
    """Share of the exact scan's top ``recall_depth`` windows the index finds, on ``queries`` samples."""
    recall_depth: int
    p50_ms: float
    p95_ms: float
    queries: int
    built_at: str
    seconds: float

    def save(self, folder: Path) -> None:
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        replace_atomically(folder / ANN_RECORD, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, folder: Path) -> "AnnRecord | None":
        try:
            data = json.loads((folder / ANN_RECORD).read_text(encoding="utf-8"))
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError):
            return None


class AnnIndex:
    """A memory-mapped ANN index that proposes candidate window ids."""

    def __init__(self, index: faiss.Index, record: AnnRecord):
        self.index = index
        self.record = record

    @classmethod
    def open(cls, directory: Path, next_window_id: int) -> "AnnIndex | None":
        """The built index, or None (never built, unreadable, or built past what the catalog holds)."""
        folder = Path(directory) / SEGMENTS_DIR
        record = AnnRecord.load(folder)
        if record is None or record.covers_below > next_window_id:
            return None
        try:
            index = faiss.read_index(str(folder / record.file), faiss.IO_FLAG_MMAP_IFC)
        except Exception:  # noqa: BLE001 - a damaged index only costs speed: searches scan exactly
            return None
        return cls(index, record)

    @property
    def covers_below(self) -> int:
        return self.record.covers_below

    def candidates(self, query: np.ndarray, k: int, allowed: np.ndarray | None, fraction: float = 1.0,
                   nprobe: int | None = None, count: int | None = None) -> np.ndarray:
        """Candidate ids for ``query``: ``record.candidates`` of them, or twice k when that is more.

        ``allowed`` is packed bits over window ids (little-endian bit order); a filter keeping
        ``fraction`` of the archive probes proportionally more lists, so as many eligible
        candidates are seen as unfiltered."""
        nprobe = nprobe or self.record.nprobe
        if fraction < 1.0:
            nprobe = math.ceil(nprobe / max(fraction, 1e-6))
        params = faiss.SearchParametersIVF(nprobe=min(self.record.nlist, nprobe))
        selector = None  # it and the bits must outlive the search
        if allowed is not None:
            if allowed.dtype != np.uint8:
                raise TypeError("allowed must be packed bits (uint8), not a bool mask")
            allowed = np.ascontiguousarray(allowed)
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(allowed))
            params.sel = selector
        wanted = count or max(self.record.candidates, 2 * k)
        _, ids = self.index.search(np.ascontiguousarray(query[None, :], np.float32), wanted, params=params)
        ids = ids[0]
        return ids[ids >= 0].astype(np.int64)
