"""The catalog's record of the vector rows: which segment files exist and a CRC-32 of every chunk.

Every ``CHUNK_ROWS`` rows of a segment carry a CRC-32 of their bytes, written in the same catalog
transaction that commits the rows (an append continues the last chunk's CRC, so no byte is read
twice). The catalog, not the folder listing, says which segment files exist and how many rows
each holds: a file deleted, renamed or dropped in from outside is noticed, never adopted. A chunk
is small (1 MiB at 512 dimensions) so that damage found by ``soundtrace check`` condemns only the
few recordings whose windows lie in it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import duckdb
import numpy as np

CHUNK_ROWS = 1024


@dataclass(frozen=True)
class Chunk:
    """``rows`` rows from window id ``first_id`` on, in the segment file starting at ``segment``."""

    first_id: int
    segment: int
    rows: int
    crc32: int

    @property
    def end_id(self) -> int:
        return self.first_id + self.rows


def crc_of(data) -> int:
    return zlib.crc32(memoryview(data).cast("B"))


def appended(segment: int, first_id: int, data: np.ndarray, last: Chunk | None) -> list[Chunk]:
    """The chunks of ``segment`` changed by appending ``data`` (rows from ``first_id`` on) after
    ``last``, the segment's last chunk so far (None for a new segment)."""
    changed: list[Chunk] = []
    done = 0
    if last is not None and last.rows < CHUNK_ROWS:
        take = min(CHUNK_ROWS - last.rows, len(data))
        crc = zlib.crc32(memoryview(np.ascontiguousarray(data[:take])).cast("B"), last.crc32)
        changed.append(Chunk(last.first_id, segment, last.rows + take, crc))
        done = take
    while done < len(data):
        take = min(CHUNK_ROWS, len(data) - done)
        changed.append(Chunk(first_id + done, segment, take, crc_of(np.ascontiguousarray(data[done : done + take]))))
        done += take
    return changed


def load(con: duckdb.DuckDBPyConnection, last_segment: bool = False) -> list[Chunk]:
    """Every chunk, or only the last segment's (all an append needs)."""
    where = " WHERE segment = (SELECT max(segment) FROM vector_chunks)" if last_segment else ""
    rows = con.execute(f"SELECT first_id, segment, rows, crc32 FROM vector_chunks{where} ORDER BY first_id").fetchall()
    return [Chunk(int(a), int(b), int(c), int(d)) for a, b, c, d in rows]


def record(con: duckdb.DuckDBPyConnection, chunks: list[Chunk]) -> None:
    """Insert or update ``chunks`` (inside the caller's transaction)."""
    import pyarrow as pa  # here: a search never needs it (its import is 85 ms)

    if not chunks:
        return
    table = pa.table({
        "first_id": pa.array([c.first_id for c in chunks], pa.int64()),
        "segment": pa.array([c.segment for c in chunks], pa.int64()),
        "rows": pa.array([c.rows for c in chunks], pa.int64()),
        "crc32": pa.array([c.crc32 for c in chunks], pa.int64()),
    })
    _chunks = table  # noqa: F841 — read by DuckDB's scan of this frame's Arrow tables (no view to register)
    con.execute("INSERT OR REPLACE INTO vector_chunks SELECT first_id, segment, rows, crc32 FROM _chunks")
