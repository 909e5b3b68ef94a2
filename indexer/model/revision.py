"""A saved model folder's revision, without torch: so a run can check it against the archive's
model before (or instead of) loading the weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

_HASH_CHUNK = 1 << 20


def local_revision(path: Path) -> str:
    """Stable short content hash of a saved model directory: each file's name, size, first and last MiB.

    Cheap (at most 2 MiB read per file, not the 600 MB of weights) and independent of mtimes, so a
    copied folder keeps its revision; a change confined to the middle of a weight file is not seen.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).iterdir() if p.is_file() and not p.name.startswith(".")):
        size = file.stat().st_size
        digest.update(f"{file.name}\0{size}\0".encode())
        with file.open("rb") as fh:
            digest.update(fh.read(_HASH_CHUNK))
            if size > 2 * _HASH_CHUNK:
                fh.seek(size - _HASH_CHUNK)
                digest.update(fh.read(_HASH_CHUNK))
    return "sha256:" + digest.hexdigest()[:16]


def folder_revision(model: str | None) -> str | None:
    """The revision of ``model`` when it names a saved folder; None for a hub id (known only once loaded)."""
    if not model:
        return None
    path = Path(model).expanduser()
    return local_revision(path) if path.is_dir() else None
