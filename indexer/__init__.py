"""soundtrace's engine: index audio archives once with CLAP, then search and audit them in words.

The Python API in one place::

    from indexer import Archive
    archive = Archive.open("soundtrace-archive")
    hits = archive.search("glass breaking", k=5, where="site = 'north'")

Importing this package does not import torch; the model loads on first use.
"""

from . import errors
from .archive import Archive, ArchiveInfo
from .classify import Classification, classify_audio, classify_file
from .config import DecodeOptions, EncoderConfig, RawPcmFormat, WindowConfig
from .pipeline import IndexOptions, IndexReport
from .search import RecordingHit, SearchFilters

__all__ = [
    "Archive", "ArchiveInfo", "Classification", "DecodeOptions", "EncoderConfig", "IndexOptions", "IndexReport",
    "RawPcmFormat", "RecordingHit", "SearchFilters", "WindowConfig", "classify_audio", "classify_file", "errors",
]
