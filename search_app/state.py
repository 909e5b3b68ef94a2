"""The archive and the model, opened once per app process and shared by every page and session.

Where the archive is: ``--archive DIR`` after ``--`` on the streamlit command line, else the
SOUNDTRACE_ARCHIVE variable, else ``./soundtrace-archive``. The model: ``--model`` there, else
SOUNDTRACE_MODEL, else the archive's own; the device: ``--device``, else SOUNDTRACE_DEVICE, else
auto; the precision: ``--precision``, else SOUNDTRACE_PRECISION, else auto (bf16 on CUDA, fp32 on
a CPU); ``--cache-dir``, ``--batch-size`` and ``--threads`` as for the CLI (``soundtrace app``
passes its own flags on).

DuckDB lets a writer in only while nobody reads, so the shared read-only archive lets go of its
catalog connection whenever no page is running (:func:`page_run`); it reconnects on next use,
and `soundtrace index` (which yields between commits too) keeps going while the app is open.
Failures are not cached: the next rerun simply tries again. The model is loaded on first use
(pages that read the catalog only never load it) and then shared by the archive and Classify.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import streamlit as st

from indexer.api import Archive
from indexer.archive.catalog import Catalog
from indexer.archive.manifest import MANIFEST_FILE, Manifest
from indexer.config import DEFAULT_MODEL, EncoderConfig, default_archive_dir
from indexer.embedding import Encoder
from indexer.errors import ArchiveBusyError, ModelMismatchError, SoundtraceError

PROJECT_LABELSETS = Path(__file__).resolve().parents[1] / "data" / "labelsets"

RELOAD_AFTER_S = 60.0
"""A copy of the archive older than this is reopened once the catalog has changed (new recordings)."""

_opened: dict[int, tuple[Archive, int, float]] = {}  # id -> (archive, catalog generation, opened at)
_models: dict[EncoderConfig, Encoder] = {}  # CLAPs in memory, one per configuration
_loading = threading.Lock()
_running = 0
_guard = threading.Lock()
_writing = threading.Lock()


# --- configuration -----------------------------------------------------------------------------


def _app_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--archive", "--model", "--device", "--cache-dir", "--precision"):
        parser.add_argument(flag)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--threads", type=int)
    return parser.parse_known_args(sys.argv[1:])[0]


def archive_dir() -> Path:
    return Path(_app_args().archive or default_archive_dir()).expanduser().resolve()


def model_name(directory: Path | None = None) -> str:
    """``--model``, else SOUNDTRACE_MODEL, else the model the archive was built with, else the default CLAP."""
    given = _app_args().model or os.environ.get("SOUNDTRACE_MODEL")
    if given:
        return given
    directory = directory or archive_dir()
    if (directory / MANIFEST_FILE).is_file():
        return Manifest.load(directory).model_id
    return DEFAULT_MODEL


def encoder_config(directory: Path | None = None) -> EncoderConfig:
    """The model and where it runs, as the app was started with."""
    args = _app_args()
    return EncoderConfig(
        model=model_name(directory), device=args.device or os.environ.get("SOUNDTRACE_DEVICE") or "auto",
        cache_dir=args.cache_dir, batch_size=args.batch_size or None, threads=args.threads,
        precision=(args.precision or os.environ.get("SOUNDTRACE_PRECISION") or "auto").strip().lower(),
    )


def labelset_files() -> list[Path]:
    """Saved label sets: the project's ``data/labelsets/*.yaml`` and any ``*.yaml`` in the archive dir."""
    found = sorted(PROJECT_LABELSETS.glob("*.yaml")) if PROJECT_LABELSETS.is_dir() else []
    directory = archive_dir()
    return found + (sorted(directory.glob("*.yaml")) if directory.is_dir() else [])


# --- the shared model and archive ----------------------------------------------------------------


def _load(config: EncoderConfig) -> Encoder:
    from indexer.model.loading import load_encoder

    return load_encoder(config)


def _keep_model(archive: Archive) -> None:
    """Remember the model an archive loaded on first use, so a reopened archive and Classify reuse it."""
    if archive.encoder_loaded:
        _models.setdefault(archive.encoder_config, archive.encoder)


def _in_memory(config: EncoderConfig) -> Encoder | None:
    """The model of this configuration if one is loaded already (here, or by an open archive)."""
    for opened, _, _ in list(_opened.values()):
        _keep_model(opened)
    return _models.get(config)


def _forget(archive: Archive) -> None:
    _opened.pop(id(archive), None)
    _keep_model(archive)
    archive.close()


def _still_current(archive: Archive) -> bool:
    """False (and closed) once the catalog has moved on from the copy, unless the copy is recent."""
    _, generation, opened_at = _opened.get(id(archive), (None, None, 0.0))
    if time.monotonic() - opened_at < RELOAD_AFTER_S:
        return True
    try:
        current = archive.catalog.generation() == generation
    except SoundtraceError:
        return True  # busy: keep answering from what we have
    if not current:
        _forget(archive)
    return current


@st.cache_resource(show_spinner="Opening the archive…", validate=_still_current)
def _archive(directory: str, config: EncoderConfig) -> Archive:
    """The archive with its model loaded on first use (a page that needs none never loads it, and a
    missing archive is said before any model is looked for); a model already in memory is reused."""
    archive = Archive.open(directory, encoder=_in_memory(config), encoder_config=config, read_only=True)
    _opened[id(archive)] = (archive, archive.catalog.generation(), time.monotonic())
    return archive


def encoder() -> Encoder:
    """The one CLAP model of this process: the archive's own when it is open (loaded through it, so
    the two share it), else loaded here (the Classify page needs no archive)."""
    config = encoder_config()
    with _loading:
        if _in_memory(config) is None:
            with st.spinner("Loading the CLAP model…"):
                for opened, _, _ in list(_opened.values()):
                    if opened.encoder_config == config:
                        try:
                            _models[config] = opened.encoder
                            break
                        except ModelMismatchError:  # --model names another CLAP than the archive's
                            pass
                else:
                    _models[config] = _load(config)
        return _models[config]


def archive() -> Archive:
    """The shared read-only archive; ArchiveNotFoundError when there is none, ArchiveBusyError when
    a writer kept it for too long."""
    directory = archive_dir()
    return _archive(str(directory), encoder_config(directory))


def archive_exists() -> bool:
    return Archive.exists(archive_dir())


def release_archive() -> None:
    """Close the shared archive; the next ``archive()`` opens it afresh (new recordings included)."""
    for opened, _, _ in list(_opened.values()):
        _forget(opened)
    _archive.clear()


def _yield_locks() -> None:
    """Let go of the catalog; first write the words searched since (remembered text vectors, so a
    later process embeds them no more), which needs the catalog let go anyway."""
    for opened, _, _ in list(_opened.values()):
        opened.remember_text(wait_s=0.0)  # never keeps the next page waiting; unwritten words wait for the next try
        opened.catalog.yield_lock()


@contextmanager
def page_run() -> Iterator[None]:
    """Wraps one script run; when the last running page ends, the archive lets go of its lock."""
    global _running
    with _guard:
        _running += 1
    try:
        with _one_page_at_a_time:  # the archive's single DuckDB connection is not shared between runs
            yield
    finally:
        with _guard:
            _running -= 1
            if _running == 0:
                _yield_locks()


_one_page_at_a_time = threading.RLock()


@contextmanager
def writable_archive() -> Iterator[Archive]:
    """The archive opened for writing (an audit run saves itself), one writer at a time.

    DuckDB will not open a file read-write in a process that reads it, so the shared archive's
    connection is closed first; it reconnects on its next use.
    """
    with _writing:
        _yield_locks()
        try:
            config = encoder_config()
            opened = Archive.open(archive_dir(), encoder=_in_memory(config), encoder_config=config)
        except duckdb.ConnectionException:
            raise ArchiveBusyError("Another tab of the app is reading the archive; try again in a moment.") from None
        with opened:
            try:
                yield opened
            finally:
                _keep_model(opened)  # marks need no model; an audit of new words loads it once, for all


def writer_active() -> bool:
    """Whether another process holds the archive for writing right now (an index or audit run)."""
    try:
        Catalog.open(archive_dir(), read_only=True, wait_s=0.0).close()
    except ArchiveBusyError:
        return True
    except SoundtraceError:
        return False
    return False
