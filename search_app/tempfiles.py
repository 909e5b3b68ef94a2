"""Uploads and downloads pass through temporary files that are always deleted after use."""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from indexer.archive.catalog import Catalog
from indexer.audit import saved_runs as audit_runs
from indexer.errors import SoundtraceError

_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


@contextmanager
def upload_as_file(data: bytes, name: str) -> Iterator[Path]:
    """The uploaded bytes as a temp file keeping only the name's extension (decoders need it);
    the browser's file name never becomes a path. An engine error raised inside names the
    person's own file, never the server's temp path."""
    suffix = Path(name or "").suffix.lower()
    handle = tempfile.NamedTemporaryFile(prefix="soundtrace-upload-", suffix=suffix if _SUFFIX.match(suffix) else "", delete=False)
    path = Path(handle.name)
    try:
        with handle:
            handle.write(data)
        yield path
    except SoundtraceError as exc:
        shown = Path(name or "the upload").name
        raise type(exc)(str(exc).replace(str(path), shown).replace(path.name, shown)) from None
    finally:
        os.unlink(handle.name)


def export_bytes(catalog: Catalog, run_id: int, fmt: str = "csv", all_labels: bool = False) -> bytes:
    """``indexer.audit.saved_runs.export`` of a run, read back as bytes for a download button."""
    handle = tempfile.NamedTemporaryFile(prefix="soundtrace-export-", suffix=f".{fmt}", delete=False)
    handle.close()
    try:
        audit_runs.export(catalog, run_id, Path(handle.name), fmt, all_labels=all_labels)
        return Path(handle.name).read_bytes()
    finally:
        os.unlink(handle.name)
