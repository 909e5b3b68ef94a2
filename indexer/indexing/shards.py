"""Finished files of a distributed run, kept as shards keyed by content hash until they are committed.

A file whose windows all came back from the cluster is written here (atomically: a temporary
file, fsynced, renamed) before it waits its turn to be committed in file order. A run killed at
any moment and started again finds its finished files here by their content hash and commits them
without decoding or embedding them again. Shards live in a folder named by what their vectors
depend on (model revision, window and decoding settings), so a shard is never read back into an
archive whose vectors it would not equal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from indexer.archive.durable import replace_atomically
from indexer.archive.manifest import Manifest
from indexer.archive.records import RecordingRow, WindowRows
from indexer.config import DecodeOptions, EncoderConfig, resolve_precision

STAGING_DIR = "staging"
SUFFIX = ".shard.npz"
CONTENT_FIELDS = ("duration_s", "sample_rate", "channels", "format", "decoder", "peak", "rms_db", "clipped_fraction",
                  "silent_fraction", "is_silent", "is_clipped")
"""What a recording row owes to its audio alone (not to the file's name, size or time)."""
_WINDOW_FIELDS = tuple(f.name for f in fields(WindowRows))


SHARD_FORMAT = 1
FINGERPRINT_LENGTH = 16
"""Hex digits naming a settings folder (``fingerprint``)."""


class Staging:
    def __init__(self, root: Path, manifest: Manifest, decode: DecodeOptions, model: EncoderConfig):
        self.folder = Path(root) / fingerprint(manifest, decode, model)

    @classmethod
    def every(cls, root: Path) -> list["Staging"]:
        """The staging of each settings folder under ``root`` (whatever settings made them)."""
        root = Path(root)
        found = []
        for folder in sorted(root.iterdir()) if root.is_dir() else ():
            if folder.is_dir() and len(folder.name) == FINGERPRINT_LENGTH and all(c in "0123456789abcdef" for c in folder.name):
                staging = cls.__new__(cls)
                staging.folder = folder
                found.append(staging)
        return found

    def finished(self) -> frozenset[str]:
        """Content hashes with a shard here."""
        if not self.folder.is_dir():
            return frozenset()
        return frozenset(p.name[: -len(SUFFIX)] for p in self.folder.glob("*" + SUFFIX))

    def save(self, row: RecordingRow, rows: WindowRows) -> None:
        """Keep one finished file's recording figures and window rows (the same hash twice: the same bytes)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        recording = json.dumps({name: getattr(row, name) for name in CONTENT_FIELDS})
        arrays = {name: getattr(rows, name) for name in _WINDOW_FIELDS}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, recording=np.frombuffer(recording.encode(), np.uint8), **arrays)

        replace_atomically(self._path(row.content_hash), write)

    def row(self, digest: str, row: RecordingRow) -> RecordingRow:
        """``row`` (this file's path, size and time) completed with the shard's figures (its rows unread)."""
        with np.load(self._path(digest)) as data:
            recording = json.loads(data["recording"].tobytes().decode())
        return RecordingRow(**{**asdict(row), **recording, "content_hash": digest, "status": "indexed"})

    def rows(self, digest: str) -> WindowRows:
        with np.load(self._path(digest)) as data:
            return WindowRows(**{name: data[name] for name in _WINDOW_FIELDS})

    def remove(self, digests) -> None:
        for digest in digests:
            self._path(digest).unlink(missing_ok=True)
        for torn in self.folder.glob("*" + SUFFIX + ".tmp") if self.folder.is_dir() else ():
            torn.unlink(missing_ok=True)  # a write killed before its rename
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def _path(self, digest: str) -> Path:
        if not digest or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError("a shard is named by a content hash")
        return self.folder / (digest + SUFFIX)


def clear_committed(root: Path, committed) -> int:
    """Remove the shards of files the catalog already holds (``committed``: content hashes), in every
    settings folder under ``root``; returns how many. Every run does this, whichever engine: a Ray
    run killed after its commits but before its clean-up would otherwise leave them for good, as
    files that are then unchanged never reach the clean-up of a Ray run again."""
    held, removed = set(committed), 0
    for staging in Staging.every(root):
        done = staging.finished() & held
        staging.remove(done)
        removed += len(done)
    return removed


def staged(root: Path) -> tuple[int, int]:
    """(shards, bytes) waiting under ``root`` to be committed: ``info`` counts them."""
    shards = [p for staging in Staging.every(root) for p in staging.folder.glob("*" + SUFFIX)]
    return len(shards), sum(p.stat().st_size for p in shards if p.is_file())


def fingerprint(manifest: Manifest, decode: DecodeOptions, model: EncoderConfig) -> str:
    """What a window's vector depends on besides its audio, as a short name: the weights, the
    window and decoding settings, the batch shape, the device kind (a GPU's bits are not a CPU's)
    and a precision other than fp32 (named only then, so fp32 shards keep their earlier names)."""
    identity = manifest.identity
    kind = model.device.split(":")[0]
    precision = resolve_precision(model.precision, kind)
    described = json.dumps({
        "format": SHARD_FORMAT, "revision": identity.revision, "dim": identity.dim, "windows": asdict(manifest.windows),
        "decode": asdict(decode), "batch_size": model.for_device(kind).batch_size, "device": kind,
        **({"precision": precision} if precision != "fp32" else {}),
    }, sort_keys=True, default=str)
    return hashlib.sha256(described.encode()).hexdigest()[:FINGERPRINT_LENGTH]
