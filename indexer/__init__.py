"""soundtrace's engine: index audio archives once with CLAP, then search and audit them in words.

The Python API in one place::

    from indexer import Archive, classify_audio, load_labelset, run_audit
    archive = Archive.open("soundtrace-archive", create=True)   # create: made if missing
    archive.index(["/data/calls"])
    hits = archive.search("glass breaking", k=5, where="site = 'north'")
    run = run_audit(archive, load_labelset("calls.yaml"))

Names load on first use (PEP 562), so importing one submodule (the decoding process does) stays
cheap, and nothing here imports torch until a model is needed.
"""

from importlib import import_module

_NAMES = {
    "Archive": "api", "ArchiveInfo": "archive.storage",
    "Classification": "classify.zero_shot", "ClassifyOptions": "classify.zero_shot", "classify_audio": "classify.zero_shot",
    "classify_file": "classify.zero_shot", "classify_folder": "classify.batch",
    "DecodeOptions": "config", "EncoderConfig": "config", "RawPcmFormat": "config", "WindowConfig": "config",
    "IndexOptions": "indexing.pipeline", "IndexReport": "indexing.pipeline",
    "RecordingHit": "search.ranking", "SearchFilters": "search.filtering",
    "run_audit": "audit.runner", "load_labelset": "audit.labelset_yaml", "inline_labelset": "audit.labelset",
    "mark_windows": "learning.marks", "learn_label": "learning.learned", "suggest_windows": "learning.suggest",
    "FitOptions": "learning.fit",
}
"""Name -> the module that defines it."""

_MODULES = {"errors": "errors", "audit_runs": "audit.saved_runs"}
"""Modules offered under a short name: ``from indexer import audit_runs``."""

__all__ = sorted({*_NAMES, *_MODULES})


def __getattr__(name: str):
    if name in _MODULES:
        return import_module(f".{_MODULES[name]}", __name__)
    if name in _NAMES:
        return getattr(import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
