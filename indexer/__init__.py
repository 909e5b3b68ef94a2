"""soundtrace's engine: index audio archives once with CLAP, then search and audit them in words.

The Python API in one place::

    from indexer import Archive
    archive = Archive.open("soundtrace-archive")
    hits = archive.search("glass breaking", k=5, where="site = 'north'")

Names load on first use (PEP 562), so importing one submodule (the decoding process does) stays
cheap, and nothing here imports torch until a model is needed.
"""

from importlib import import_module

_EXPORTS = {
    "Archive": "archive", "ArchiveInfo": "archive",
    "Classification": "classify", "classify_audio": "classify", "classify_file": "classify",
    "DecodeOptions": "config", "EncoderConfig": "config", "RawPcmFormat": "config", "WindowConfig": "config",
    "IndexOptions": "pipeline", "IndexReport": "pipeline",
    "RecordingHit": "search", "SearchFilters": "search",
    "errors": None,
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'indexer' has no attribute {name!r}")
    module = import_module(f".{_EXPORTS[name] or name}", __name__)
    return module if _EXPORTS[name] is None else getattr(module, name)


def __dir__() -> list[str]:
    return __all__
