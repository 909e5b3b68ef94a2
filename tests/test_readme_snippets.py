"""The README's Python snippets run exactly as written, so the README and the API cannot drift.

They use the default model, ``laion/clap-htsat-fused``. No weights can be downloaded here, so the
snippets run offline against a Hugging Face cache that holds the tiny CLAP under that id: the
default model then loads through the real hub-cache path, as it would on a user's machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.config import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def readme_python_blocks() -> list[str]:
    return SNIPPET.findall((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def default_model_cache(tiny_clap_dir, tmp_path_factory) -> Path:
    """An HF_HOME whose hub cache holds the tiny CLAP as ``laion/clap-htsat-fused`` (main -> one snapshot)."""
    home = tmp_path_factory.mktemp("hf-home")
    repo = home / "hub" / ("models--" + DEFAULT_MODEL.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_clap_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return home


def test_the_readme_shows_the_python_api():
    blocks = readme_python_blocks()
    assert blocks and any("Archive.open(" in block for block in blocks)


def test_the_readme_python_snippets_run_as_written(default_model_cache, tmp_path):
    """From a fresh folder holding the project's data (the README runs from the project's folder):
    the archive is created with the default model, indexed, searched, classified against, audited."""
    (tmp_path / "data").symlink_to(ROOT / "data")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SOUNDTRACE_", "HF_"))}
    env.update(HF_HOME=str(default_model_cache), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    printed = []
    for block in readme_python_blocks():
        result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"README snippet failed:\n{block}\n{result.stderr[-3000:]}"
        printed.append(result.stdout)
    out = "\n".join(printed)
    manifest = json.loads((tmp_path / "soundtrace-archive" / "manifest.json").read_text())
    assert manifest["model_id"] == DEFAULT_MODEL  # made by create=True with the default model
    assert "11 indexed, 1 failed" in out  # every sample but the headerless .raw (no rate given)
    hits = [line for line in out.splitlines() if "data/samples/" in line]
    assert hits and all("'site': 'porto'" in line for line in hits)  # the where= filter held
    assert "'angry complaint':" in out and "'polite greeting':" in out  # classify_audio's {label: probability}
    assert "best_start_s" in out and "meta.site" in out  # the audit's results DataFrame was printed
