"""The analyst's walkthrough runs top to bottom (offline it falls back to the tiny CLAP), leaves no
folder behind even when a cell fails, and the install the README gives for it is what CI installs."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
LEFTOVER = "soundtrace-quickstart-*"


def _execute(notebook, tmp_path: Path, monkeypatch) -> Path:
    """Run ``notebook`` in a fresh kernel whose temporary files go to a folder of the test's own."""
    kernel_tmp = tmp_path / "kernel-tmp"
    kernel_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(kernel_tmp))  # the kernel's tempfile.gettempdir()
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}})
    try:
        client.execute()
    finally:
        monkeypatch.undo()
    return kernel_tmp


def _printed(notebook) -> str:
    return "\n".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    )


@pytest.mark.slow
def test_quickstart_notebook_executes_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no weights: the notebook must fall back
    monkeypatch.delenv("SOUNDTRACE_MODEL", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    kernel_tmp = _execute(notebook, tmp_path, monkeypatch)
    text = _printed(notebook)
    assert "Using a tiny random CLAP" in text
    assert "indexed 12, failed 0" in text  # every sample, the raw one with its rate, the silent one flagged
    assert "leeds" in text and "tone_1khz_25s.opus" in text
    assert "angry complaint" in text
    assert "audit 1: " in text and "windows in" in text
    assert "highlight_start_s" in text and "meta.site" in text  # the export's columns; metadata as meta.<column>
    assert "run 1" in text and "run 2" in text  # the diff table
    assert re.search(r"removed .*soundtrace-quickstart-\w+: True", text)  # the last cell cleaned up
    assert not list(kernel_tmp.glob(LEFTOVER))


@pytest.mark.slow
def test_a_failed_cell_leaves_no_folder_behind(tiny_clap_dir, tmp_path, monkeypatch):
    """Run All stops at a failing cell, so the last cell never runs: the folder goes when the kernel stops."""
    monkeypatch.setenv("SOUNDTRACE_MODEL", str(tiny_clap_dir))  # the setup cell loads it: no tiny CLAP to build
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    setup = next(cell for cell in notebook.cells if cell.cell_type == "code")
    failing = nbformat.v4.new_code_cell('(WORK / "written").write_text("x")\nprint("work:", WORK)\nraise RuntimeError("a cell fails")')
    notebook.cells = [setup, failing]
    kernel_tmp = tmp_path / "kernel-tmp"
    with pytest.raises(CellExecutionError, match="a cell fails"):
        _execute(notebook, tmp_path, monkeypatch)
    work = re.search(r"work: (\S+)", _printed(notebook)).group(1)
    assert Path(work).parent == kernel_tmp  # the folder was made where the test looks
    assert not Path(work).exists() and not list(kernel_tmp.glob(LEFTOVER))


def test_the_readme_install_for_the_notebook_is_what_ci_installs():
    """README: ``pip install -c constraints.txt -e '.[notebook]'``. Its packages are installed here (the
    dev extra holds them, so CI runs that install) and pinned in constraints.txt."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "-e '.[notebook]'" in readme and "jupyter lab notebooks/quickstart.ipynb" in readme
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    pinned = {
        line.split("==")[0].strip().lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for requirement in map(Requirement, extras["notebook"]):
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            pytest.fail(f"{requirement.name} (the notebook extra) is not installed: add it to the dev extra")
        assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)
        assert requirement.name.lower() in pinned, f"{requirement.name} is not pinned in constraints.txt"
