"""The FAISS vector index: ids are catalog window ids, scores are cosine similarities.

The index is a derived, fast-to-load copy of the vectors held in the catalog. It is written to a
temporary name and renamed, so a crash leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

INDEX_FILE = "vectors.faiss"
GpuMode = Literal["auto", "never"]


@dataclass(frozen=True)
class StoreConfig:
    """How the vector index is built and where it searches."""

    factory: str = "Flat"
    """A FAISS index-factory string; inner product metric on unit vectors = cosine."""
    gpu: GpuMode = "auto"


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorStore:
    """An ``IndexIDMap2`` around the configured index, with optional GPU search."""

    def __init__(self, index: faiss.Index, config: StoreConfig = StoreConfig()):
        self.index = index
        self.config = config
        self._gpu_copy: faiss.Index | None = None

    @classmethod
    def empty(cls, dim: int, config: StoreConfig = StoreConfig()) -> "VectorStore":
        inner = faiss.index_factory(int(dim), config.factory, faiss.METRIC_INNER_PRODUCT)
        return cls(faiss.IndexIDMap2(inner), config)

    @classmethod
    def load(cls, path: Path, config: StoreConfig = StoreConfig()) -> "VectorStore":
        return cls(faiss.read_index(str(path)), config)

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything stored, in storage order; for a flat index a zero-copy view.

        Full-archive audits scan this with one matrix product instead of asking for top-k.
        """
        inner = faiss.downcast_index(self.index.index)
        n, d = int(inner.ntotal), int(inner.d)
        if isinstance(inner, faiss.IndexFlat):
            vectors = faiss.rev_swig_ptr(inner.get_xb(), n * d).reshape(n, d) if n else np.empty((0, d), np.float32)
        else:
            vectors = inner.reconstruct_n(0, n) if n else np.empty((0, d), np.float32)
        return self.ids(), vectors

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self.index.is_trained:
            self.index.train(vectors)
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_copy = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
        self._gpu_copy = None

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; ``allowed_ids`` restricts the search to those windows."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(int(k), len(self)))
        if len(self) == 0:
            empty = np.empty((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        if allowed_ids is not None:
            if len(allowed_ids) == 0:
                empty = np.empty((len(queries), 0))
                return empty.astype(np.float32), empty.astype(np.int64)
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
            params = faiss.SearchParameters(sel=selector)
            scores, ids = self.index.search(queries, min(k, len(allowed_ids)), params=params)
        else:
            scores, ids = self._searcher().search(queries, k)
        return scores, ids

    def _searcher(self) -> faiss.Index:
        """The GPU copy when configured and present; filtered searches always run on the CPU index."""
        if self.config.gpu == "never" or not gpu_available():
            return self.index
        if self._gpu_copy is None:
            self._gpu_copy = faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu_copy
