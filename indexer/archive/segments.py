"""The archive's vectors, stored once: float16 rows in append-only segment files.

Each segment is a valid FAISS ``IndexScalarQuantizer`` (fp16, inner product) file, so FAISS opens
it by memory-mapping in constant time and scans it without a copy; row ``i`` of the segment named
``seg-<first>.faiss`` is window id ``first + i``. Window ids are handed out contiguously by the
catalog (``next_window_id``), and the catalog alone says which files exist and how many of their
rows count (``checksums``): rows are written and fsynced *before* the catalog transaction that
hands out their ids and records their CRCs commits. Rows past that point were never committed (a
run killed between the two writes) and are cut off by the next writer; readers never look at them,
nor at a file the catalog does not name. The header's row count is a hint written after the
commit: readers take the rows the catalog vouches for, whatever the header says.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

from indexer.archive.checksums import Chunk, appended
from indexer.archive.durable import fsync_dir
from indexer.errors import ArchiveDamagedError, ArchiveError, ArchiveWriteError

SEGMENTS_DIR = "vectors"
STRAY_DIR = "stray"
SEGMENT_ROWS = 1 << 20
"""Rows per segment file (1 GiB at 512 dimensions); a full segment is never written again."""
_NAME = re.compile(r"^seg-(\d{12})\.faiss$")


@lru_cache(maxsize=None)
def _header(dim: int) -> bytes:
    """FAISS's own header of an empty fp16 scalar-quantizer index of ``dim`` dimensions."""
    empty = faiss.IndexScalarQuantizer(int(dim), faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    header = faiss.serialize_index(empty).tobytes()
    if header[:4] != b"IxSQ" or header[8:16] != bytes(8) or header[-8:] != bytes(8):
        raise ArchiveError(f"FAISS {faiss.__version__} writes scalar-quantizer files in a layout soundtrace does not know.")
    return header


def header_for(dim: int, rows: int) -> bytes:
    """The header with ``rows`` rows: ntotal at byte 8, the code bytes in the header's last 8."""
    header = bytearray(_header(dim))
    header[8:16] = int(rows).to_bytes(8, "little", signed=True)
    header[-8:] = (int(rows) * 2 * int(dim)).to_bytes(8, "little")
    return bytes(header)


@lru_cache(maxsize=None)
def _decoder(dim: int) -> faiss.IndexScalarQuantizer:
    return faiss.IndexScalarQuantizer(int(dim), faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)


def to_float32(rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Stored float16 rows into ``out[:len(rows)]`` as float32, exactly, by FAISS's vectorised
    decoder: three times numpy's cast (0.32 s against 1.03 s for a million 512-d rows), the slow
    part of an audit."""
    rows = np.ascontiguousarray(rows, np.float16)
    target = out[: len(rows)]
    if not target.flags.c_contiguous or target.dtype != np.float32 or target.shape != rows.shape:
        raise ValueError("out must be C-contiguous float32 with room for the rows")
    if len(rows):
        _decoder(rows.shape[1]).sa_decode_c(len(rows), faiss.swig_ptr(rows.view(np.uint8)), faiss.swig_ptr(target))
    return target


def segment_name(first_id: int) -> str:
    return f"seg-{int(first_id):012d}.faiss"


@dataclass(frozen=True)
class Segment:
    """One segment file and the rows of it the catalog vouches for."""

    path: Path
    first_id: int
    rows: int
    dim: int

    @property
    def end_id(self) -> int:
        return self.first_id + self.rows

    @property
    def row_bytes(self) -> int:
        return 2 * self.dim

    @property
    def offset(self) -> int:
        return len(_header(self.dim))

    def codes(self) -> np.ndarray:
        """The committed rows as a read-only (rows, dim) float16 memory map, advised as read at
        random (no readahead around each re-scored candidate). Pages a search touches stay in its
        resident set as shared page cache: ≈ 1.2 GB after 300 searches at 1M windows."""
        if self.rows == 0:
            return np.empty((0, self.dim), np.float16)
        codes = np.memmap(self.path, dtype=np.float16, mode="r", offset=self.offset, shape=(self.rows, self.dim))
        mapping = getattr(codes, "_mmap", None)
        if mapping is not None and hasattr(mmap, "MADV_RANDOM"):
            mapping.madvise(mmap.MADV_RANDOM)
        return codes

    def faiss_index(self) -> tuple[faiss.Index, int]:
        """The file as a memory-mapped FAISS index, and how many of its rows it holds (the header's
        count, which may lag the committed rows after a crash; ``VectorStore`` covers the rest)."""
        index = faiss.read_index(str(self.path), faiss.IO_FLAG_MMAP_IFC)
        return index, int(index.ntotal)


REPAIR = "run `soundtrace check --repair` to rebuild what can be rebuilt"


def damaged(path: Path, what: str, kind: str = "file") -> ArchiveDamagedError:
    return ArchiveDamagedError(f"The vector file {path} {what}; the archive's vectors were changed outside soundtrace — {REPAIR}.",
                               kind)


@dataclass(frozen=True)
class Appended:
    """What an append wrote: the segments it touched (their headers are updated once the rows are
    committed) and the chunks whose checksums the committing transaction records."""

    segments: list[Segment]
    chunks: list[Chunk]


class SegmentFiles:
    """The segment files of one archive: listing, verifying, appending (writer only) and tidying."""

    def __init__(self, directory: Path, dim: int):
        self.folder = Path(directory) / SEGMENTS_DIR
        self.dim = int(dim)

    def listing(self) -> list[tuple[int, Path]]:
        """(first id, path) of every file named like a segment, in id order."""
        if not self.folder.is_dir():
            return []
        found = []
        for entry in os.scandir(self.folder):
            match = _NAME.match(entry.name)
            if match:
                found.append((int(match[1]), Path(entry.path)))
        return sorted(found)

    def committed(self, chunks: list[Chunk], next_window_id: int) -> list[Segment]:
        """The segments the catalog vouches for (``chunks``), each verified cheaply: present, a
        regular file, long enough, and with a valid header. A file the catalog does not name is
        never opened, whatever it holds; damage raises ``ArchiveDamagedError`` naming the file."""
        segments = layout(chunks, self.folder, self.dim)
        end = segments[-1].end_id if segments else None
        if end is not None and end != next_window_id:
            raise ArchiveDamagedError(
                f"The catalog of {self.folder.parent} counts vectors up to window {next_window_id - 1} but records rows "
                f"up to {end - 1}; the catalog was changed outside soundtrace — restore it from a backup."
            )
        for segment in segments:
            verify_cheaply(segment)
        return segments

    # --- writer ------------------------------------------------------------------------------

    def discard_uncommitted(self, segments: list[Segment], next_window_id: int) -> None:
        """Cut what runs that never committed left behind: files a run started past the committed
        ids, and rows past the catalog's in the last one. Only the writer calls this."""
        known = {s.first_id for s in segments}
        for first, path in self.listing():
            if first >= next_window_id and first not in known:
                if self.unfinished(path):
                    _remove(path)
                else:  # not one of ours: kept for `check --repair` (it may be a renamed segment)
                    with _writing(path):
                        move_aside(self.folder.parent, path)
        if segments:
            last = segments[-1]
            with _writing(last.path):
                with open(last.path, "r+b") as fh:
                    if os.fstat(fh.fileno()).st_size != last.offset + last.rows * last.row_bytes:
                        fh.truncate(last.offset + last.rows * last.row_bytes)
                        os.fsync(fh.fileno())
            self.mark_committed(segments)

    def append(self, first_id: int, vectors: np.ndarray, committed: list[Segment], last_chunk: Chunk | None) -> Appended:
        """Write rows for ids ``first_id …`` after the committed ones, durably, before the catalog
        transaction that commits those ids (and records the returned chunks). Segments fill to
        ``SEGMENT_ROWS``, then a new one starts."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float16)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ArchiveError(f"Vectors of shape {vectors.shape} cannot be stored in a {self.dim}-dimensional archive.")
        if not np.isfinite(vectors).all():
            raise ArchiveError("Vectors with values outside float16's range cannot be stored.")
        last = committed[-1] if committed else None
        if last is not None and last.end_id != first_id:
            raise ArchiveError(f"Window {first_id} does not follow the stored vectors (next is {last.end_id}).")
        if last_chunk is not None and (last is None or last_chunk.segment != last.first_id or last_chunk.end_id != first_id):
            last_chunk = None
        touched, chunks = [], []
        at, written = first_id, 0
        with _writing(self.folder):
            self.folder.mkdir(exist_ok=True)
            while written < len(vectors):
                if last is None or last.rows >= SEGMENT_ROWS:
                    last, last_chunk = Segment(self.folder / segment_name(at), at, 0, self.dim), None
                    self._start(last.path)
                take = min(len(vectors) - written, SEGMENT_ROWS - last.rows)
                rows = vectors[written : written + take]
                with open(last.path, "r+b") as fh:
                    fh.seek(last.offset + last.rows * last.row_bytes)
                    fh.write(memoryview(rows).cast("B"))
                    fh.flush()
                    os.fsync(fh.fileno())
                changed = appended(last.first_id, at, rows, last_chunk)
                chunks.extend(changed)
                last_chunk = changed[-1]
                last = Segment(last.path, last.first_id, last.rows + take, self.dim)
                touched.append(last)
                at, written = at + take, written + take
        return Appended(touched, chunks)

    def mark_committed(self, segments: list[Segment]) -> None:
        """After the commit: each touched segment's header says how many rows it holds now (a hint
        readers check against the catalog; a full segment says it is full)."""
        for segment in segments:
            header = header_for(self.dim, segment.rows)
            try:
                with open(segment.path, "rb") as fh:
                    if fh.read(len(header)) == header:
                        continue
                with open(segment.path, "r+b") as fh:
                    fh.write(header)
            except OSError:
                pass  # a hint only: readers take the catalog's count, and the next writer tries again

    def unfinished(self, path: Path) -> bool:
        """A file a run started and never committed: its header still says 0 rows."""
        try:
            with open(path, "rb") as fh:
                return fh.read(len(_header(self.dim))) == header_for(self.dim, 0)
        except OSError:
            return False

    def write_header(self, segment: Segment) -> None:
        """A damaged header made whole again (``check --repair``): it is derived from the catalog."""
        with _writing(segment.path):
            with open(segment.path, "r+b") as fh:
                fh.write(header_for(self.dim, segment.rows))
                fh.flush()
                os.fsync(fh.fileno())

    def _start(self, path: Path) -> None:
        with open(path, "wb") as fh:
            fh.write(header_for(self.dim, 0))
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(path.parent)


def layout(chunks: list[Chunk], folder: Path, dim: int) -> list[Segment]:
    """The segments ``chunks`` describe, in id order; contiguous, or the catalog was tampered with."""
    segments: list[Segment] = []
    for chunk in chunks:
        if segments and segments[-1].first_id == chunk.segment and segments[-1].end_id == chunk.first_id:
            last = segments[-1]
            segments[-1] = Segment(last.path, last.first_id, last.rows + chunk.rows, dim)
        elif chunk.first_id == chunk.segment and (not segments or segments[-1].end_id == chunk.first_id):
            segments.append(Segment(folder / segment_name(chunk.segment), chunk.segment, chunk.rows, dim))
        else:
            raise ArchiveDamagedError(
                f"The catalog of {folder.parent} records vector rows that do not follow each other (at window "
                f"{chunk.first_id}); the catalog was changed outside soundtrace — restore it from a backup."
            )
    return segments


def header_rows(segment: Segment) -> int | None:
    """The row count a segment's header claims, or None when the header is not one soundtrace wrote."""
    expected = _header(segment.dim)
    try:
        with open(segment.path, "rb") as fh:
            head = fh.read(len(expected))
    except OSError:
        return None
    if len(head) != len(expected):
        return None
    rows = int.from_bytes(head[8:16], "little", signed=True)
    if rows < 0 or rows > segment.rows or head != header_for(segment.dim, rows):
        return None
    return rows


def verify_cheaply(segment: Segment) -> None:
    """Presence, kind, size and header: what every open checks (``soundtrace check`` reads every byte)."""
    path = segment.path
    try:
        info = path.stat()
    except FileNotFoundError:
        raise damaged(path, "is missing") from None
    except OSError as exc:
        raise damaged(path, f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise damaged(path, "is not a regular file")
    needed = segment.offset + segment.rows * segment.row_bytes
    if info.st_size < needed:
        raise damaged(path, f"is shorter than the catalog says ({info.st_size} of {needed} bytes)")
    if header_rows(segment) is None:
        raise damaged(path, "has a damaged header", "header")


def move_aside(directory: Path, path: Path) -> Path:
    """A file the catalog does not name, kept under vectors/stray/ for a person (or a repair) to look at."""
    folder = Path(directory) / SEGMENTS_DIR / STRAY_DIR
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    number = 1
    while target.exists():
        target = folder / f"{path.name}.{number}"
        number += 1
    os.replace(path, target)
    fsync_dir(folder)
    return target


def _remove(path: Path) -> None:
    with _writing(path):
        path.unlink(missing_ok=True)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write (a full disk, permissions, an immutable file) as one sentence; the catalog
    has not vouched for anything written, so the archive is as it was."""
    try:
        yield
    except OSError as exc:
        raise ArchiveWriteError(
            f"Cannot write the archive's vectors at {path} ({exc.strerror or exc}); nothing was changed — "
            "free space or fix the permissions and run again."
        ) from None
