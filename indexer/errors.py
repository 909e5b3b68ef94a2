"""Typed errors raised by the engine.

The core never prints or exits; the CLI and the app turn these into one sentence for a person.
Every error carries that sentence as its message, so ``str(err)`` is always fit to show.
"""

from __future__ import annotations


class SoundtraceError(Exception):
    """Base of every error the engine raises on purpose."""


# --- input audio -------------------------------------------------------------------------------


class AudioError(SoundtraceError):
    """A recording could not be turned into samples; the indexer records it as failed."""


class UnsupportedFormatError(AudioError):
    """No decoder available here reads this file."""


class DecodeError(AudioError):
    """The file claims a known format but its contents are broken or truncated."""


class EmptyAudioError(AudioError):
    """The file decodes to no samples at all."""


class InvalidSamplesError(AudioError):
    """Sample values no recording holds (NaN, infinity, magnitudes far past full scale)."""


class AudioTooLongError(AudioError):
    """The header claims a length beyond the configured guard (a broken or hostile header)."""


# --- model -------------------------------------------------------------------------------------


class ModelError(SoundtraceError):
    """The CLAP model could not be used."""


class ModelNotAvailableError(ModelError):
    """Weights are neither cached locally nor downloadable. The advice names the CLI's flag
    (``MODEL_OPTION``); the Python API re-raises it naming its own parameter (``naming``)."""

    MODEL_OPTION = "--model DIR"

    def naming(self, parameter: str) -> "ModelNotAvailableError":
        """The same sentence for a Python caller: ``parameter`` where the CLI's flag was."""
        return type(self)(str(self).replace(self.MODEL_OPTION, parameter))


class DeviceError(ModelError):
    """The requested torch device does not exist on this machine."""


class UnsupportedPrecisionError(DeviceError):
    """A precision this device cannot run the model at (tf32 and fp16 need a CUDA GPU), or none known."""


# --- archive -----------------------------------------------------------------------------------


class ArchiveError(SoundtraceError):
    """The archive on disk cannot be used as asked."""


class ArchiveNotFoundError(ArchiveError):
    """No archive exists at the given directory."""


class ModelMismatchError(ArchiveError):
    """Vectors from a different model (or window settings) would be mixed into one archive."""


class ArchiveBusyError(ArchiveError):
    """Another process holds the archive for writing."""


class MetadataError(ArchiveError):
    """A metadata CSV cannot be read or has no column to join recordings on."""


# --- queries -----------------------------------------------------------------------------------


class QueryError(SoundtraceError):
    """A search or classify request is malformed."""


class FilterError(QueryError):
    """A --where expression is invalid or tries to do more than filter."""


class LabelError(QueryError):
    """A label list is empty or unusable."""


class InputPathError(SoundtraceError):
    """A path given to index or query does not exist or cannot be read."""


class LabelSetError(QueryError):
    """A label set (YAML or inline) is invalid; the message names the line and the problem."""


class AuditError(SoundtraceError):
    """An audit run cannot be found, compared or exported as asked."""


# --- engines -----------------------------------------------------------------------------------


class EngineError(SoundtraceError):
    """A distributed engine (Ray) is missing, unreachable or failed in a way not about one file."""


class MarkError(QueryError):
    """A mark or a learned label that cannot be made or used: an unknown window or label, a bad marks CSV."""


# --- damage ------------------------------------------------------------------------------------


class ArchiveDamagedError(ArchiveError):
    """A file of the archive was deleted, renamed, truncated or altered outside soundtrace; the
    message names the file and the remedy (usually ``soundtrace check --repair``). ``kind`` says
    what ``check --repair`` can do about it ("header": write it again; "file": the rows are lost)."""

    def __init__(self, message: str, kind: str = "file"):
        super().__init__(message)
        self.kind = kind


class AnnUnreadableError(ArchiveDamagedError):
    """The ANN index file, read on its first search, is not an index FAISS can read: searches
    scan exactly instead, and ``info`` and ``check`` name the file."""


class ArchiveWriteError(ArchiveError):
    """The archive's files could not be written (a full disk, permissions, a read-only or
    immutable file); the write was abandoned and the archive is as it was before it."""
