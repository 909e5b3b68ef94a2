"""What ``check --repair`` does to the archive's own files, each step safe to kill and repeat.

Lost rows are never answered from: the recordings whose windows lie in them are set aside as
failed (``vectors_damaged``, with the reason) in one transaction, their windows dead; once no live
window uses a damaged chunk its CRC is taken from the bytes as they are, and a missing file comes
back as a sparse file of dead rows, so the catalog and the files agree again. A stray file is
moved aside, never adopted; one whose every chunk matches a missing segment's CRCs is that
segment renamed, and gets its name back.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from indexer.archive.catalog import Catalog
from indexer.archive.checksums import Chunk, crc_of
from indexer.archive.durable import fsync_dir, replace_atomically
from indexer.archive.segments import SEGMENTS_DIR, Segment, header_for, header_rows, verify_cheaply
from indexer.errors import ArchiveDamagedError

DAMAGED_KIND = "vectors_damaged"


def recordings_in(catalog: Catalog, ranges: list[tuple[int, int]]) -> list[tuple[int, str]]:
    """(id, path) of the indexed recordings with a live window in any of the id ``ranges``."""
    if not ranges:
        return []
    firsts = [int(a) for a, _ in ranges]
    ends = [int(b) for _, b in ranges]
    rows = catalog.con.execute(
        "SELECT DISTINCT r.id, r.path FROM windows w JOIN recordings r ON r.id = w.recording_id"
        " JOIN (SELECT unnest(?) AS lo, unnest(?) AS hi) lost ON w.id >= lost.lo AND w.id < lost.hi ORDER BY r.id",
        [firsts, ends],
    ).fetchall()
    return [(int(i), str(p)) for i, p in rows]


def set_aside(catalog: Catalog, recordings: list[tuple[int, str]]) -> None:
    """The recordings become failed rows saying why, and their windows dead, in one transaction."""
    if not recordings:
        return
    ids = [i for i, _ in recordings]
    with catalog.transaction():
        dead = catalog.con.execute(
            "SELECT id FROM windows WHERE list_contains(?, recording_id) ORDER BY id", [ids]
        ).fetchnumpy()["id"].astype(np.int64)
        catalog.mark_dead(dead)
        catalog.con.execute("DELETE FROM windows WHERE list_contains(?, recording_id)", [ids])
        catalog.con.execute(
            "UPDATE recordings SET status = 'failed', error_kind = ?, mtime = -1, error = 'its vectors in the archive "
            "were damaged outside soundtrace; index the file again to embed it anew' WHERE list_contains(?, id)",
            [DAMAGED_KIND, ids],
        )
        catalog.bump_generation()


def set_aside_before(catalog: Catalog) -> list[tuple[int, str]]:
    """(id, path) of every recording set aside for lost vectors and not embedded again yet."""
    rows = catalog.con.execute("SELECT id, path FROM recordings WHERE status = 'failed' AND error_kind = ? ORDER BY id",
                               [DAMAGED_KIND]).fetchall()
    return [(int(i), str(p)) for i, p in rows]


def restore_missing(segment: Segment) -> None:
    """A missing segment file made again as a sparse file of zero rows (every one of them dead)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(header_for(segment.dim, segment.rows))
            fh.truncate(segment.offset + segment.rows * segment.row_bytes)

    replace_atomically(segment.path, write)


def usable(segment: Segment) -> bool:
    """A regular file long enough for the catalog's rows (its bytes may still be wrong)."""
    try:
        verify_cheaply(segment)
    except ArchiveDamagedError as exc:
        return exc.kind == "header"
    return True


def make_folder(directory: Path) -> None:
    """``vectors/`` as a folder again: whatever was put there instead is kept beside it."""
    folder = Path(directory) / SEGMENTS_DIR
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        os.replace(folder, folder.with_name(f"{SEGMENTS_DIR}.not-a-folder"))
    folder.mkdir(exist_ok=True)
    fsync_dir(folder.parent)


def rechecked_chunks(live: np.ndarray, segment: Segment, chunks: list[Chunk]) -> list[Chunk]:
    """``chunks`` of ``segment`` none of whose rows a ``live`` window uses, with the CRC of their bytes now."""
    codes = segment.codes()
    fresh = []
    for chunk in chunks:
        lo, hi = np.searchsorted(live, [chunk.first_id, chunk.end_id])
        if hi > lo:
            continue  # a live window still needs these rows: its recording is re-embedded first
        start = chunk.first_id - segment.first_id
        fresh.append(Chunk(chunk.first_id, chunk.segment, chunk.rows, crc_of(np.asarray(codes[start : start + chunk.rows]))))
    return fresh


def matches(path: Path, segment: Segment, chunks: list[Chunk]) -> bool:
    """Whether the file at ``path`` holds exactly the rows the catalog recorded for ``segment``."""
    candidate = Segment(path, segment.first_id, segment.rows, segment.dim)
    try:
        if path.stat().st_size < segment.offset + segment.rows * segment.row_bytes or header_rows(candidate) is None:
            return False
    except OSError:
        return False
    codes = candidate.codes()
    return all(
        crc_of(np.asarray(codes[c.first_id - segment.first_id : c.first_id - segment.first_id + c.rows])) == c.crc32
        for c in chunks
    )


def rename_back(path: Path, segment: Segment) -> None:
    os.replace(path, segment.path)
    fsync_dir(segment.path.parent)
