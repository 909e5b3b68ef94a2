"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight CLAP saved like the real checkpoint, built once per test session."""
    from indexer.model.tiny_clap import build_tiny_clap

    return build_tiny_clap(tmp_path_factory.mktemp("tiny-clap"), seed=0)
