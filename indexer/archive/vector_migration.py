"""Migration 006's first step: the vectors of an archive made before segment files move out of
``windows.embedding`` into ``vectors/``, before the SQL step drops the column.

It is safe to kill at any moment: until the SQL step commits, the catalog still holds every
vector and the files written so far are thrown away and written again on the next open.
"""

from __future__ import annotations

import shutil

import duckdb
import numpy as np

from indexer.archive.segments import SEGMENTS_DIR, SegmentFiles

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
    committed, expected, gaps, last = [], None, [], None
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
        last = files.append(expected, block, committed)
        committed = files.committed(at)
        expected = at
    if expected < next_id:  # ids handed out to windows deleted since: dead rows up to the counter
        gaps.append(np.arange(expected, next_id, dtype=np.int64))
        last = files.append(expected, np.zeros((next_id - expected, dim), np.float32), committed)
    if last is not None:
        files.mark_committed(last)
    return np.concatenate(gaps) if gaps else np.empty(0, np.int64)
