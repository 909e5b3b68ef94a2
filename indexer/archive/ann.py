"""The approximate-nearest-neighbour index over the stored vectors, and its record.

An inverted file (IVF, HNSW coarse quantizer) of 4-bit fast-scan PQ codes, whose ids are window
ids. It only proposes candidates; ``VectorStore`` re-scores them from the stored float16 rows, so
PQ's coarse distances decide which windows are looked at, never the scores people see. Its
parameters, and the recall and latency they gave at build time, are recorded in the catalog with
the file's size and CRC-32 (``AnnEntry``); it is built aside and swapped in by one catalog
transaction, so searches never wait for a build. A file that does not match its entry is never
searched: answers come from the exact scan until ``index`` or ``check --repair`` rebuilds it.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import duckdb
import faiss
import numpy as np

from indexer.archive.segments import SEGMENTS_DIR
from indexer.errors import AnnUnreadableError

LEGACY_RECORD = "ann.json"
"""Where archives before catalog migration 012 kept the record (imported by that migration)."""


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AnnRecord":
        """The record, every field of its declared type; ValueError for anything else."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        values = {}
        for field in fields(cls):
            value = data.get(field.name)
            kind = {"str": str, "int": int, "float": (int, float)}[field.type]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ValueError(f"{field.name} is not a {field.type}")
            values[field.name] = float(value) if field.type == "float" else value
        return cls(**values)


@dataclass(frozen=True)
class AnnEntry:
    """The catalog's row for the ANN index in force: its record, and the file's size and CRC-32."""

    record: AnnRecord
    bytes: int
    crc32: int

    @classmethod
    def of_file(cls, record: AnnRecord, path: Path) -> "AnnEntry":
        return cls(record, path.stat().st_size, file_crc(path))

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection) -> "AnnEntry | None":
        """The entry, or None when no index is built (a row that does not parse counts as none:
        the next ``index`` builds a new one)."""
        rows = con.execute("SELECT record, bytes, crc32 FROM ann_index WHERE id = 1").fetchall()
        if not rows:
            return None
        try:
            return cls(AnnRecord.from_json(rows[0][0]), int(rows[0][1]), int(rows[0][2]))
        except (ValueError, TypeError):
            return None

    def save(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("INSERT OR REPLACE INTO ann_index VALUES (1, ?, ?, ?, ?)",
                    [self.record.file, self.bytes, self.crc32, self.record.to_json()])

    @staticmethod
    def clear(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("DELETE FROM ann_index")


def file_crc(path: Path, block: int = 16 << 20) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            crc = zlib.crc32(chunk, crc)
    return crc


class AnnIndex:
    """An ANN index that proposes candidate window ids, read from its file on the first search
    that asks (at 10M windows the file is 1.4 GB, a second and a half of every open otherwise)."""

    def __init__(self, index: faiss.Index | None, record: AnnRecord, path: Path | None = None):
        if index is None and path is None:
            raise ValueError("an AnnIndex needs its index or the file to read it from")
        self._index = index
        self.record = record
        self.path = path

    @property
    def loaded(self) -> bool:
        return self._index is not None

    @property
    def index(self) -> faiss.Index:
        """The FAISS index, read now if it was not (``AnnUnreadableError`` naming the file)."""
        if self._index is None:
            try:
                self._index = faiss.read_index(str(self.path), faiss.IO_FLAG_MMAP_IFC)
            except Exception:  # noqa: BLE001 - FAISS raises RuntimeError with C++ text: named, never shown
                raise AnnUnreadableError(f"the ANN index file {self.path} cannot be read") from None
        return self._index

    @classmethod
    def open(cls, directory: Path, entry: AnnEntry | None, next_window_id: int) -> "tuple[AnnIndex | None, str | None]":
        """The built index and None, or None and why the file cannot be used (None, None: never
        built). Checked cheaply: the file's presence and size; FAISS reads it on the first search."""
        if entry is None:
            return None, None
        path = Path(directory) / SEGMENTS_DIR / entry.record.file
        if entry.record.covers_below > next_window_id or "/" in entry.record.file:
            return None, f"the catalog's record of the ANN index {path} does not fit the archive"
        try:
            size = path.stat().st_size
        except OSError:
            return None, f"the ANN index file {path} is missing"
        if size != entry.bytes:
            return None, f"the ANN index file {path} has {size} bytes where the catalog recorded {entry.bytes}"
        return cls(None, entry.record, path), None

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
        return np.unique(ids[ids >= 0]).astype(np.int64)  # an id twice (a damaged index) is one candidate
