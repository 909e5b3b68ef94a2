"""The Python steps of two migrations. 006: the vectors of an archive made before segment files
move out of ``windows.embedding`` into ``vectors/``, before the SQL step drops the column. 012: the
segments' chunk CRCs and the ANN's record enter the catalog, from the files as they are.

Both are safe to kill at any moment: until the migration's transaction commits, the catalog is as
before and the step runs again on the next open.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np

from indexer.archive import checksums
from indexer.archive.ann import LEGACY_RECORD, AnnEntry, AnnRecord
from indexer.archive.segments import SEGMENTS_DIR, Segment, SegmentFiles

CHUNK = 65_536


def move_vectors(con: duckdb.DuckDBPyConnection, directory) -> np.ndarray:
    """Write every stored vector to fresh segment files; returns the ids between the first and
    the last that have no window (gaps left by deletions), which become dead rows."""
    for old in ("vectors.faiss", "vectors.faiss.tmp"):  # the old layout's float32 copy of the vectors
        (directory / old).unlink(missing_ok=True)
    folder = directory / SEGMENTS_DIR
    if folder.exists():
        shutil.rmtree(folder)  # an earlier attempt that did not commit
    row = con.execute("SELECT len(embedding) FROM windows LIMIT 1").fetchall()
    if not row:
        return np.empty(0, np.int64)
    dim = int(row[0][0])
    files = SegmentFiles(directory, dim)
    next_id = int(con.execute("SELECT value FROM state WHERE key = 'next_window_id'").fetchall()[0][0])
    committed: list[Segment] = []
    expected, gaps = None, []
    reader = con.sql(f"SELECT id, embedding::FLOAT[{dim}] FROM windows ORDER BY id").to_arrow_reader(CHUNK)
    for batch in reader:
        ids = batch.column(0).to_numpy().astype(np.int64)
        vectors = batch.column(1).flatten().to_numpy().reshape(-1, dim)
        expected = int(ids[0]) if expected is None else expected
        at = int(ids[-1]) + 1
        block = np.zeros((at - expected, dim), np.float32)  # ids rise; a gap is a dead zero row
        block[ids - expected] = vectors
        if at - expected > len(ids):
            gaps.append(np.setdiff1d(np.arange(expected, at, dtype=np.int64), ids, assume_unique=True))
        _extend(committed, files.append(expected, block, committed, None).segments)
        expected = at
    if expected < next_id:  # ids handed out to windows deleted since: dead rows up to the counter
        gaps.append(np.arange(expected, next_id, dtype=np.int64))
        _extend(committed, files.append(expected, np.zeros((next_id - expected, dim), np.float32), committed, None).segments)
    files.mark_committed(committed)
    return np.concatenate(gaps) if gaps else np.empty(0, np.int64)


def _extend(committed: list[Segment], touched: list[Segment]) -> None:
    for segment in touched:
        if committed and committed[-1].first_id == segment.first_id:
            committed[-1] = segment
        else:
            committed.append(segment)


def _chunks_as_found(segment: Segment) -> list[checksums.Chunk]:
    """The chunks of a segment with the CRC of the bytes there; rows that cannot be read (a file
    already damaged before this migration) get a CRC no bytes have, so ``check`` names them and
    ``check --repair`` mends them — the migration itself never fails on them."""
    found = []
    try:
        fh = open(segment.path, "rb") if segment.path.is_file() else None
    except OSError:
        fh = None
    try:
        for lo in range(0, segment.rows, checksums.CHUNK_ROWS):
            rows = min(checksums.CHUNK_ROWS, segment.rows - lo)
            data = b""
            if fh is not None:
                fh.seek(segment.offset + lo * segment.row_bytes)
                data = fh.read(rows * segment.row_bytes)
            crc = checksums.crc_of(data) if len(data) == rows * segment.row_bytes else UNREADABLE
            found.append(checksums.Chunk(segment.first_id + lo, segment.first_id, rows, crc))
    finally:
        if fh is not None:
            fh.close()
    return found


UNREADABLE = -1
"""A CRC-32 is never negative: the mark of rows that could not be read when it was recorded."""


def record_checksums(con: duckdb.DuckDBPyConnection, directory: Path) -> None:
    """Migration 012's step, inside its transaction: every committed row's chunk CRC, read from the
    segment files the folder holds (the catalog did not name them before), and the ANN record."""
    directory = Path(directory)
    next_id = int(con.execute("SELECT value FROM state WHERE key = 'next_window_id'").fetchall()[0][0])
    listing = [(first, path) for first, path in SegmentFiles(directory, 1).listing() if first < next_id]
    if listing:
        dim = int(json.loads((directory / "manifest.json").read_text(encoding="utf-8"))["dim"])
        chunks = []
        for i, (first, path) in enumerate(listing):
            segment = Segment(path, first, (listing[i + 1][0] if i + 1 < len(listing) else next_id) - first, dim)
            chunks.extend(_chunks_as_found(segment))
        checksums.record(con, chunks)
    folder = directory / SEGMENTS_DIR
    try:
        record = AnnRecord.from_json((folder / LEGACY_RECORD).read_text(encoding="utf-8"))
        AnnEntry.of_file(record, folder / record.file).save(con)
    except (OSError, ValueError):
        pass  # no index, or one that cannot be trusted: the next `index` builds one
