"""The archive's writer lock: one process changes recordings, windows and the vector files at a time.

DuckDB's own file lock cannot serialise two ``index`` runs: each lets go of the catalog between
commits so that searches and the app keep answering, and the two would interleave, do all the
work twice and append vectors over each other's. This lock is held for a
whole run instead. It is an ``flock`` on ``writer.lock`` in the archive folder, so the kernel
drops it when its holder dies, even by ``kill -9``: a stale lock cannot outlive a crash. The file
names its holder, for the message a second writer gets.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from indexer.errors import ArchiveBusyError, ArchiveDamagedError, ArchiveError, ArchiveWriteError

try:
    import fcntl
except ImportError:  # Windows: no flock; a second writer is not detected there
    fcntl = None

LOCK_FILE = "writer.lock"


WAIT_S = 10.0
"""How long a writer waits for the lock before refusing: long enough for a short write (an audit's
text, a migration of a small archive), far shorter than another indexing run."""


class WriterLock:
    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait_s: float = WAIT_S) -> None:
        """Take the lock (kept until ``release``), or raise ArchiveBusyError naming who holds it."""
        deadline = time.monotonic() + wait_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise ArchiveBusyError(self._busy_message())
            time.sleep(0.1)

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise ArchiveDamagedError(
                f"Cannot lock the archive at {self.path.parent} for writing: {self.path} is not a plain file; "
                "remove it (soundtrace makes it again) and run again."
            )
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # a lock file another user made: flock works on a read-only descriptor
            fd = self._open_read_only()
        except OSError as exc:
            raise ArchiveWriteError(f"Cannot lock the archive at {self.path.parent} for writing ({exc.strerror or exc}).") from None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise ArchiveError(f"Cannot lock the archive at {self.path.parent} for writing ({exc.strerror or exc}).") from None
        self._fd = fd
        self._sign()
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""

    def _open_read_only(self) -> int:
        try:
            return os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise ArchiveError(f"Cannot lock the archive at {self.path.parent} for writing ({exc.strerror or exc}).") from None

    def _sign(self) -> None:
        """Name the holder in the file, for the message a second writer gets (best effort)."""
        try:
            os.ftruncate(self._fd, 0)
            os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        except OSError:
            pass

    def _busy_message(self) -> str:
        holder = self.holder()
        if holder.startswith(f"pid {os.getpid()} on {socket.gethostname()},"):
            return (
                f"This process already writes to the archive at {self.path.parent} through another open Archive; "
                "close that one first."
            )
        return (
            f"Another soundtrace run ({holder or 'unknown process'}) is writing to the archive at "
            f"{self.path.parent}; wait for it to finish, or stop it, and run this again."
        )

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
