"""Opening the catalog file while other processes use it: DuckDB lets one process write a file and
nobody read it meanwhile, so openers wait, in turn, for whoever holds it to let go."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from indexer.errors import ArchiveBusyError, ArchiveError

try:
    import fcntl
except ImportError:  # Windows: no turnstile, waiters poll
    fcntl = None

LOCK_WAIT_S = 30.0
"""How long opening waits for another process to let go of the catalog before giving up."""
TURNSTILE_SUFFIX = ".queue"


def connect(path: Path | None, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    """Connect, waiting while another process holds the file (it yields between units of work).

    Waiters queue on a turnstile beside the catalog, so whoever has waited longest is the one
    polling when the holder lets go: an index run that yields every few seconds cannot take the
    file straight back from a search that was waiting for it.
    """
    if path is None:
        return duckdb.connect(":memory:")
    deadline = time.monotonic() + wait_s
    with _turnstile(path, deadline):
        while True:
            try:
                return duckdb.connect(str(path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise ArchiveError(f"Cannot open the catalog {path}: {exc}") from None
                if time.monotonic() >= deadline:
                    raise _busy(path) from None
            time.sleep(0.01)


@contextmanager
def _turnstile(path: Path, deadline: float) -> Iterator[None]:
    """Hold the queue lock beside ``path`` (a plain pass where the folder is not writable)."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(path.with_name(path.name + TURNSTILE_SUFFIX), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(path) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def _busy(path: Path) -> ArchiveBusyError:
    return ArchiveBusyError(
        f"The archive at {path.parent} is in use by another soundtrace process; wait for it to finish."
    )

