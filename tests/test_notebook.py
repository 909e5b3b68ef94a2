"""The analyst's walkthrough runs top to bottom (offline it falls back to the tiny CLAP)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no weights: the notebook must fall back
    monkeypatch.delenv("SOUNDTRACE_MODEL", raising=False)
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = {i: "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))
               for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    text = "\n".join(outputs.values())
    assert "Using a tiny random CLAP" in text
    assert "indexed 12, failed 0" in text  # every sample, the raw one with its rate, the silent one flagged
    assert "leeds" in text and "tone_1khz_25s.opus" in text
    assert "angry complaint" in text
    assert "audit 1: " in text and "windows in" in text
    assert "highlight_start_s" in text  # the export's columns
    assert "run 1" in text and "run 2" in text  # the diff table
