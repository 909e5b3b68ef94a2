"""Finding the recordings under the paths a user names, and fingerprinting them cheaply."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .errors import InputPathError

AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .mp2 .aif .aiff .aifc .afc .au .snd .caf .w64 .rf64 .wv"
    " .m4a .mp4 .m4b .aac .alac .amr .3gp .3ga .webm .mka .mkv .wma .asf .spx .raw .pcm .ac3".split()
)
"""Extensions picked up when a folder is named; a file named explicitly is always tried."""


@dataclass(frozen=True)
class SourceFile:
    path: Path
    size_bytes: int
    mtime: float


def discover(paths: Iterable[Path], extensions: frozenset[str] = AUDIO_EXTENSIONS) -> list[SourceFile]:
    """Every audio file under ``paths`` (recursively), resolved, de-duplicated and sorted."""
    found: dict[Path, SourceFile] = {}
    for given in paths:
        given = Path(given).expanduser()
        if not given.exists():
            raise InputPathError(f"{given} does not exist.")
        if given.is_file():
            candidates: Iterable[Path] = [given]
        else:
            candidates = (
                Path(root) / name
                for root, dirs, names in os.walk(given)
                for name in names
                if Path(name).suffix.lower() in extensions and not name.startswith(".")
            )
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved in found or not resolved.is_file():
                continue
            stat = resolved.stat()
            found[resolved] = SourceFile(resolved, stat.st_size, stat.st_mtime)
    return [found[p] for p in sorted(found)]


def content_hash(path: Path, chunk: int = 1 << 20) -> str:
    """BLAKE2b of the bytes: identifies a recording across renames and touches."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
