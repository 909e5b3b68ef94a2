"""Opening the catalog file while other processes use it: DuckDB lets one process write a file and
nobody read it meanwhile, so openers wait, in turn, for whoever holds it to let go."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import duckdb

from indexer.errors import ArchiveBusyError, ArchiveError

try:
    import fcntl
except ImportError:  # Windows: no turnstile, waiters poll
    fcntl = None

LOCK_WAIT_S = 30.0
"""How long opening waits for another process to let go of the catalog before giving up."""
ASIDE_WAIT_S = 1.0
"""How long a write aside (``write_aside``) waits for the catalog before it is skipped."""
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
                if "could not set lock" not in str(exc).lower():  # not "lock" alone: the path may hold that word
                    raise ArchiveError(f"Cannot open the catalog {path}: {exc}") from None
                if time.monotonic() >= deadline:
                    raise _busy(path) from None
            time.sleep(0.01)


def write_aside(path: Path | None, write: Callable[[duckdb.DuckDBPyConnection], None], wait_s: float = ASIDE_WAIT_S) -> bool:
    """One short transaction on a read-write connection of its own, closed at once: how a process
    that reads the catalog read-only (a search) keeps something worth keeping (the text vectors it
    computed), like marks, without the writer lock. The caller lets go of its own connection first
    (DuckDB opens a file one way per process). False, nothing written, when the file cannot be
    written now: another process holds it past ``wait_s``, the folder is read-only, or this
    process reads it through another connection."""
    if path is None:
        return False
    try:
        con = connect(path, read_only=False, wait_s=wait_s)
    except (ArchiveError, duckdb.Error) as exc:
        logging.getLogger(__name__).debug("not written aside to %s: %s", path, exc)
        return False
    try:
        con.execute("BEGIN")
        write(con)
        con.execute("COMMIT")
        return True
    except duckdb.Error as exc:  # closing rolls the transaction back
        logging.getLogger(__name__).debug("not written aside to %s: %s", path, exc)
        return False
    finally:
        con.close()


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

