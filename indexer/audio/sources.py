"""Finding the recordings under the paths a user names, and fingerprinting them cheaply.

Discovery never fails because of one entry: a link that cannot be followed, a name that is not
UTF-8 or a pipe under an audio name becomes a ``SourceFile`` with a ``problem``, which the
indexer records as failed with that reason (no decoding is tried), and the run goes on.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from indexer.errors import InputPathError

AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .mp2 .aif .aiff .aifc .afc .au .snd .caf .w64 .rf64 .wv"
    " .m4a .mp4 .m4b .aac .alac .amr .3gp .3ga .webm .mka .mkv .wma .asf .spx .raw .pcm .ac3 .slk .silk".split()
)
"""Extensions picked up when a folder is named; a file named explicitly is always tried."""

_NOT_REGULAR = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)


@dataclass(frozen=True)
class Problem:
    """Why an entry cannot be read as a recording at all; ``kind`` is the catalog's error_kind."""

    kind: str
    reason: str


@dataclass(frozen=True)
class SourceFile:
    path: Path
    size_bytes: int
    mtime: float
    problem: Problem | None = None

    @property
    def key(self) -> str:
        """The path as the catalog stores it (see ``path_key``)."""
        return path_key(self.path)


@dataclass
class Discovery:
    files: list[SourceFile] = field(default_factory=list)
    ignored: int = 0
    """Files under the named folders left out because their extension is not an audio one."""
    unlisted_folders: list[str] = field(default_factory=list)
    """Folders that could not be listed, with the reason."""


def path_text(path: Path | str) -> str:
    """A path as text DuckDB and a terminal accept: names that are not UTF-8 get \\x escapes.

    Stable (the same bytes always give the same text), so such a file is recognised again.
    """
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return text


NOT_UTF8_MARK = "/."
"""Starts the key of a path that is not UTF-8. A real key is absolute and normalised, so it never
holds a "." component: no name anyone can give a file spells such a key."""

_KEY_ESCAPE = re.compile(r"\\(?:\\|x([0-9a-f]{2}))")


def path_key(path: Path | str) -> str:
    """The text a recording is known by in the catalog: the path itself when it is UTF-8 (so every
    existing archive keeps its keys), else ``NOT_UTF8_MARK`` and the bytes with backslashes doubled
    and each byte that is not UTF-8 as \\xNN. ``path_text`` alone would give a file literally named
    ``\\xe9.wav`` the key of the byte 0xE9, and the two would take each other's row."""
    text = str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        escaped = os.fsencode(path).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
        return NOT_UTF8_MARK + escaped if escaped.startswith("/") else "./" + escaped


def key_path(key: str) -> Path:
    """The path whose key is ``key`` (``path_key`` undone): what ``--prune`` looks for on disk."""
    if not key.startswith(NOT_UTF8_MARK + "/"):
        return Path(key)
    text, raw, at = key[len(NOT_UTF8_MARK):], bytearray(), 0
    for escape in _KEY_ESCAPE.finditer(text):
        raw += text[at : escape.start()].encode("utf-8") + (bytes([int(escape[1], 16)]) if escape[1] else b"\\")
        at = escape.end()
    raw += text[at:].encode("utf-8")
    return Path(os.fsdecode(bytes(raw)))


def discover(paths: Iterable[Path], extensions: frozenset[str] = AUDIO_EXTENSIONS) -> Discovery:
    """Every audio file under ``paths`` (recursively), resolved, de-duplicated and sorted.

    A named path that does not exist at all raises ``InputPathError`` (the run cannot start);
    anything else wrong with an entry becomes a ``SourceFile`` with a problem.
    """
    found: dict[str, SourceFile] = {}
    result = Discovery()
    for given in check_paths(paths):
        if given.is_dir():
            candidates = list(_walk(given, extensions, result))
        else:
            candidates = [given]
        for candidate in candidates:
            source = _source(candidate)
            found.setdefault(source.key, source)
    result.files = [found[key] for key in sorted(found)]
    return result


def check_paths(paths: Iterable[Path]) -> list[Path]:
    """The named paths, or InputPathError for the first that does not exist at all: a run that
    cannot start says so before it creates or loads anything."""
    roots = [Path(given).expanduser() for given in paths]
    for root in roots:
        if not os.path.lexists(root):
            raise InputPathError(f"{path_text(root)} does not exist; nothing was indexed.")
    return roots


def _walk(folder: Path, extensions: frozenset[str], result: Discovery) -> Iterable[Path]:
    def unlisted(err: OSError) -> None:
        result.unlisted_folders.append(f"{path_text(err.filename or folder)}: {err.strerror or err}")

    for root, _dirs, names in os.walk(folder, onerror=unlisted):
        for name in names:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in extensions:
                yield Path(root) / name
            else:
                result.ignored += 1


def _source(candidate: Path) -> SourceFile:
    absolute = Path(os.path.abspath(candidate))
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop before Python 3.13
        return _unusable(absolute, "unreadable", _link_problem(absolute, exc))
    if kernel_folder(resolved):  # keyed by the name it was found under: /proc/self/... resolves anew in each process
        what = f"a link into {kernel_folder(resolved)}" if absolute.is_symlink() else f"in {kernel_folder(resolved)}"
        return _unusable(absolute, "not_a_file", f"{path_text(absolute.name)} is {what}, the kernel's files, not a recording.")
    if path_text(resolved) != str(resolved):
        whose = "the file name" if path_text(resolved.name) != resolved.name else "the name of a folder above it"
        return _unusable(
            resolved, "bad_file_name",
            f"{path_text(resolved.name)}: {whose} is not valid UTF-8 (shown with \\x escapes); rename it to index it.",
        )
    try:
        info = os.stat(resolved)
    except OSError as exc:
        return _unusable(resolved, "unreadable", f"{resolved.name}: cannot be read ({exc.strerror or exc}).")
    for test, what in _NOT_REGULAR:
        if test(info.st_mode):
            return SourceFile(resolved, 0, info.st_mtime, Problem("not_a_file", f"{resolved.name} is {what}, not a file."))
    return SourceFile(resolved, info.st_size, info.st_mtime)


KERNEL_FOLDERS = ("/proc", "/sys")
"""The kernel's views of processes and devices: their files are not recordings, and a link to
/proc/self/... names another file in every process that follows it."""


def kernel_folder(path: Path) -> str | None:
    """/proc or /sys when ``path`` lies in one of them."""
    return next((top for top in KERNEL_FOLDERS if str(path) == top or str(path).startswith(top + "/")), None)


def _unusable(path: Path, kind: str, reason: str) -> SourceFile:
    try:
        info = os.lstat(path)
        size, mtime = info.st_size, info.st_mtime
    except OSError:
        size, mtime = 0, 0.0
    return SourceFile(path, size, mtime, Problem(kind, reason))


def _link_problem(path: Path, exc: BaseException) -> str:
    name = path_text(path.name)
    if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
        return f"{name} is a symbolic link that loops back on itself."
    if isinstance(exc, FileNotFoundError) and path.is_symlink():
        return f"{name} is a symbolic link to {path_text(os.readlink(path))}, which does not exist."
    return f"{name} cannot be read ({getattr(exc, 'strerror', None) or exc})."


def content_hash(path: Path, chunk: int = 1 << 20) -> str:
    """BLAKE2b of the bytes: identifies a recording across renames and touches."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
