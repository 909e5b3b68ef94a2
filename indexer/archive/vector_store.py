"""Searching the stored vectors: an exact scan of the memory-mapped segments, or the ANN index.

Opening costs a few memory maps whatever the archive's size; nothing is read until a search
touches it. Every answer is re-scored from the stored float16 rows with one arithmetic
(``exact_scores``), so the ANN and the exact scan give the same score to the same window and a
user can check one against the other (``search --exact``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import faiss
import numpy as np

from indexer.archive.ann import AnnEntry, AnnIndex
from indexer.archive.checksums import Chunk
from indexer.archive.segments import Segment, SegmentFiles
from indexer.archive.window_sets import WindowSet
from indexer.errors import AnnUnreadableError

GpuMode = Literal["auto", "never"]

GATHER_MAX = 20_000
"""Up to this many allowed windows are read and scored directly; more are scanned by FAISS with a
selector (reading 20,000 rows at random ≈ the cost of FAISS checking a million)."""
EXACT_MARGIN = 8
"""Extra candidates an exact scan keeps past k, so re-scoring settles near-ties at the cut-off."""


@dataclass(frozen=True)
class StoreConfig:
    """How searches run: on the GPU when present, and from what size an ANN index is used."""

    gpu: GpuMode = "auto"
    ann_min_windows: int = 250_000
    """Below this many windows every search is an exact scan (measured: ≈ 70 ns per window on
    the 2-core reference machine, so 250k windows ≈ 18 ms); from it, an ANN index is built."""
    target_recall: float = 0.95
    """Recall against the exact scan (``ann_build.RECALL_DEPTH`` deep) the ANN's parameters are chosen to reach."""
    filtered_exact_max: int = 200_000
    """A filter selecting at most this many windows is answered by an exact scan of just those
    (≈ 15 ms on the reference machine); a broader one by the ANN, probing more lists."""
    mapped_budget_bytes: int = 2 << 30
    """Pages of the vector files a long-lived process (the app, a service) keeps mapped after a
    search at most: past it the maps are closed, and the pages, still in the page cache, are only
    mapped again by the next search that reads them (10M windows are 10 GB of rows)."""


@dataclass(frozen=True)
class StoredLayout:
    """What the catalog says is stored: the id counter, dead windows, the segments' chunks and the ANN."""

    next_window_id: int
    dead: np.ndarray
    chunks: list[Chunk]
    ann: AnnEntry | None


@dataclass(frozen=True)
class StoredBlock:
    """Up to ``block_rows`` consecutive stored rows of one segment: where they start, which are alive."""

    key: tuple[str, int]
    """(segment file, first row in it): names the same stored rows for as long as the file lives."""
    first_id: int
    """The id of the block's first row, dead or alive: a live row's slot is ``id - first_id``."""
    ids: np.ndarray
    """The live windows' ids, rising."""
    stored: np.ndarray
    """Every row of the block (a view of the memory map, nothing read yet)."""
    alive: np.ndarray | None
    """Which stored rows are live; None: all of them."""

    def rows(self) -> np.ndarray:
        """The live rows (float16), read now."""
        return self.stored if self.alive is None else self.stored[self.alive]


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def mapped_bytes() -> int | None:
    """The file pages this process has mapped (Linux's RssFile), or None where it cannot be read."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"RssFile:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def exact_scores(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The one arithmetic every reported score comes from: each stored row against the query, one
    row at a time (einsum's own loop, not BLAS, whose blocking makes a row's result depend on its
    neighbours), so a window's score does not depend on which others are scored with it."""
    return np.einsum("ij,j->i", np.asarray(rows, np.float32), np.asarray(query, np.float32))


class VectorStore:
    """A read-only view of the committed vectors: segments, dead windows, and the ANN if built."""

    def __init__(self, segments: list[Segment], dead: np.ndarray, dim: int, ann: AnnIndex | None = None,
                 config: StoreConfig = StoreConfig(), ann_damage: str | None = None):
        self.segments = segments
        self.ann_damage = ann_damage
        """Why the catalog's ANN index is not used (its file is missing or altered), or None."""
        self.dead = np.unique(np.asarray(dead, np.int64))
        self.dim = int(dim)
        self.ann = ann
        self.config = config
        self._files: list[tuple[faiss.Index, faiss.Index | None, int]] | None = None
        self._live: list[np.ndarray] | None = None
        self._gpu: tuple[faiss.Index, np.ndarray] | None = None
        self._live_bits: np.ndarray | None = None
        self._codes: list[np.ndarray] | None = None

    @classmethod
    def open(cls, directory: Path, dim: int, layout: StoredLayout, config: StoreConfig = StoreConfig()) -> "VectorStore":
        """The vectors ``layout`` (the catalog's word) describes, each file verified cheaply."""
        segments = SegmentFiles(directory, dim).committed(layout.chunks, layout.next_window_id)
        ann, damage = AnnIndex.open(directory, layout.ann, layout.next_window_id)
        return cls(segments, layout.dead, dim, ann, config, damage)

    # --- what is stored ------------------------------------------------------------------------

    @property
    def end_id(self) -> int:
        return self.segments[-1].end_id if self.segments else 1

    def __len__(self) -> int:
        return sum(s.rows for s in self.segments) - len(self.dead)

    def ids(self) -> np.ndarray:
        """Every live window id, in id order."""
        every = [np.arange(s.first_id, s.end_id, dtype=np.int64) for s in self.segments]
        ids = np.concatenate(every) if every else np.empty(0, np.int64)
        return np.setdiff1d(ids, self.dead, assume_unique=True) if len(self.dead) else ids

    def vectors(self, ids) -> np.ndarray:
        """The stored rows of ``ids`` (float32, in that order); KeyError for an id not stored."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        out = np.empty((len(ids), self.dim), np.float32)
        firsts = np.array([s.first_id for s in self.segments], np.int64)
        where = np.searchsorted(firsts, ids, side="right") - 1
        for number in np.unique(where):
            segment = self.segments[number] if number >= 0 else None
            picked = np.flatnonzero(where == number)
            local = ids[picked] - (segment.first_id if segment else 0)
            if segment is None or (local >= segment.rows).any():
                raise KeyError("some windows are not stored")
            out[picked] = self._segment_codes()[number][local]
        if len(self.dead) and np.isin(ids, self.dead).any():
            raise KeyError("some windows were deleted")
        return out

    def _segment_codes(self) -> list[np.ndarray]:
        """Each segment's memory map, made once: a new map per read would fault in every page again."""
        if self._codes is None:
            self._codes = [segment.codes() for segment in self.segments]
        return self._codes

    def blocks(self, block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float16 rows) of the live windows in id order, in blocks aligned to segment starts."""
        for block in self.aligned_blocks(block_rows):
            yield block.ids, block.rows()

    def aligned_blocks(self, block_rows: int) -> Iterator["StoredBlock"]:
        """The live windows in id order, ``block_rows`` of a segment's rows at a time (dead ones
        left out), each block's rows read only when asked for."""
        for segment, codes in zip(self.segments, self._segment_codes()):
            for lo in range(0, segment.rows, block_rows):
                hi = min(lo + block_rows, segment.rows)
                ids = np.arange(segment.first_id + lo, segment.first_id + hi, dtype=np.int64)
                keep = None
                if len(self.dead) and self.dead[-1] >= ids[0]:
                    alive = ~np.isin(ids, self.dead)
                    if not alive.all():
                        ids, keep = ids[alive], alive
                yield StoredBlock((segment.path.name, lo), segment.first_id + lo, ids, codes[lo:hi], keep)

    # --- search --------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, allowed: WindowSet | np.ndarray | None = None,
               exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query, best first (ties: lower id first); ``allowed`` (a
        ``WindowSet`` or sorted window ids) restricts the search to those windows, ``exact``
        forces the full scan."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if isinstance(allowed, np.ndarray):
            allowed = WindowSet.of(allowed, max(self.end_id, int(allowed[-1]) + 1 if len(allowed) else 0))
        available = len(self) if allowed is None else len(allowed)
        k = max(0, min(int(k), available))
        if k == 0:
            empty = np.empty((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        use_ann = self.ann_trusted and not exact and (allowed is None or len(allowed) > self.config.filtered_exact_max)
        results = [self._search_one(q, k, allowed, use_ann) for q in queries]
        self._release_maps_past(self.config.mapped_budget_bytes)
        return np.stack([s for s, _ in results]), np.stack([i for _, i in results])

    def _release_maps_past(self, budget: int) -> None:
        """Close the vector files' maps once the process holds more than ``budget`` of mapped pages."""
        mapped = mapped_bytes()
        if mapped is not None and mapped > budget:
            self._files, self._codes = None, None

    @property
    def ann_trusted(self) -> bool:
        """An ANN index whose measured recall reached the target: one that did not is kept (a later
        build or extension may do better) but never asked; searches scan exactly instead."""
        return self.ann is not None and self.ann.record.recall >= self.config.target_recall

    def _search_one(self, query: np.ndarray, k: int, allowed: WindowSet | None, use_ann: bool):
        if allowed is None and self._use_gpu():  # the whole archive in GPU memory: exact, and fast
            index, ids = self._gpu_index()
            _, rows = index.search(query[None, :], min(k + EXACT_MARGIN, len(ids)))
            candidates = ids[rows[0][rows[0] >= 0]]
        elif use_ann and self._ann_readable():
            fraction = 1.0 if allowed is None else len(allowed) / max(len(self), 1)
            candidates = self.stored(self.ann.candidates(query, k, self._ann_selector(allowed), fraction))
            tail = self._scan(query, k + EXACT_MARGIN, allowed, from_id=self.ann.covers_below)
            candidates = np.union1d(candidates, tail)
        elif allowed is not None and len(allowed) <= GATHER_MAX:  # a narrow filter: its windows, every one
            candidates = allowed.ids if not len(self.dead) else np.setdiff1d(allowed.ids, self.dead, assume_unique=True)
        else:
            candidates = self._scan(query, k + EXACT_MARGIN, allowed)
        return self.rescore(query, candidates, k)

    def _ann_readable(self) -> bool:
        """Read the ANN file on its first use; one FAISS cannot read is set aside as damage (named
        by ``info`` and ``check``), and this search and the next scan exactly."""
        try:
            self.ann.index
        except AnnUnreadableError as exc:
            self.ann, self.ann_damage = None, str(exc)
            return False
        return True

    def stored(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` that are live windows with stored rows: what a damaged ANN file may propose
        besides is dropped, never looked up."""
        ids = np.asarray(ids, np.int64)
        first = self.segments[0].first_id if self.segments else self.end_id
        ids = ids[(ids >= first) & (ids < self.end_id)]
        return np.setdiff1d(ids, self.dead, assume_unique=True) if len(self.dead) else ids

    def rescore(self, query: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best k of ``candidates`` by ``exact_scores`` (ties: lower id first): (scores, ids)."""
        candidates = np.asarray(candidates, np.int64)
        scores = exact_scores(self.vectors(candidates), query) if len(candidates) else np.empty(0, np.float32)
        order = np.lexsort((candidates, -scores))[:k]
        return scores[order], candidates[order]

    def _use_gpu(self) -> bool:
        return self.config.gpu != "never" and gpu_available() and len(self) > 0

    def _gpu_index(self) -> tuple[faiss.Index, np.ndarray]:
        """A float16 flat copy of the live rows on every GPU (built on first use), and their ids."""
        if self._gpu is None:
            options = faiss.GpuMultipleClonerOptions()
            options.useFloat16 = True
            index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(self.dim), co=options)
            ids = []
            for block_ids, rows in self.blocks(65_536):  # block by block: no full-size float32 copy on the host
                index.add(np.asarray(rows, np.float32))
                ids.append(block_ids)
            self._gpu = (index, np.concatenate(ids))
        return self._gpu

    def _scan(self, query: np.ndarray, k: int, allowed: WindowSet | None, from_id: int = 0) -> np.ndarray:
        """Candidate ids from an exact scan of every segment (rows at or above ``from_id``)."""
        found = []
        for number, (segment, live) in enumerate(zip(self.segments, self._live_rows())):
            lo = max(0, from_id - segment.first_id)
            if lo >= segment.rows:
                continue
            mask = live.copy()
            mask[:lo] = False
            if allowed is not None:
                mask &= allowed.mask(segment.first_id, segment.first_id + segment.rows)
            if not mask.any():
                continue
            index, tail, held = self._open_files()[number]
            found.append(_search_masked(index, query, k, mask[:held], 0) + segment.first_id)
            if tail is not None:
                found.append(_search_masked(tail, query, k, mask[held:], held) + segment.first_id)
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def _open_files(self) -> list[tuple[faiss.Index, faiss.Index | None, int]]:
        """Per segment: its memory-mapped FAISS file, an in-memory index of committed rows the
        file's header does not count yet (a crash between commit and header update), and how
        many rows the file's index holds."""
        if self._files is None:
            files = []
            for segment in self.segments:
                index, held = segment.faiss_index()
                held = min(held, segment.rows)
                tail = None
                if held < segment.rows:
                    tail = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
                    tail.add(np.asarray(self._segment_codes()[len(files)][held:], np.float32))
                files.append((index, tail, held))
            self._files = files
        return self._files

    def _live_rows(self) -> list[np.ndarray]:
        if self._live is None:
            live = []
            for segment in self.segments:
                mask = np.ones(segment.rows, bool)
                gone = self.dead[(self.dead >= segment.first_id) & (self.dead < segment.end_id)]
                mask[gone - segment.first_id] = False
                live.append(mask)
            self._live = live
        return self._live

    def _ann_selector(self, allowed: WindowSet | None) -> np.ndarray | None:
        """Packed bits over window ids of what the ANN may return (live, and allowed when filtered)."""
        if not len(self.dead):
            return None if allowed is None else allowed.bits(self.end_id)
        if self._live_bits is None:  # the same for every search: made once
            live = np.ones(self.end_id, bool)
            live[self.dead[self.dead < self.end_id]] = False
            self._live_bits = np.packbits(live, bitorder="little")
        return self._live_bits if allowed is None else allowed.bits(self.end_id) & self._live_bits


def _search_masked(index: faiss.Index, query: np.ndarray, k: int, mask: np.ndarray, row_offset: int) -> np.ndarray:
    """Row numbers (counted from the segment's start) of the top-k rows of ``index`` that ``mask`` keeps."""
    chosen = int(mask.sum())
    if chosen == 0:
        return np.empty(0, np.int64)
    params = bitmap = selector = None  # the bitmap and selector must outlive the search
    if chosen < len(mask):
        bitmap = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        params = faiss.SearchParameters(sel=selector)
    _, labels = index.search(query[None, :], min(k, chosen), params=params)
    labels = labels[0]
    return labels[labels >= 0].astype(np.int64) + row_offset
