"""``soundtrace classify FOLDER``: the origin tool's batch mode through the CLI, on the tiny real
CLAP: every audio file under the folder a row, failures rows with their reason, the run going on."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from indexer.classify.batch import COLUMNS
from indexer.cli.main import cli
from tests.audio_factory import write_sequence

LABELS = "a steady tone, someone speaking"


def run(*args) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two short good files (one a level down), dead air, a corrupt file, an empty one and a note that is not audio."""
    root = tmp_path_factory.mktemp("batch") / "calls"
    write_sequence(root / "tone.wav", [(440, 1.5)])
    write_sequence(root / "day2" / "long.flac", [(880, 3)])
    write_sequence(root / "dead_air.wav", [(0, 1)])
    (root / "day2" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    (root / "empty.mp3").write_bytes(b"")
    (root / "notes.txt").write_text("not audio")
    return root


def _rows(text: str) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        rows.setdefault(Path(row["file"]).name, []).append(row)
    return rows


def test_a_folder_becomes_a_csv_row_per_file_and_failures_do_not_stop_it(folder, tiny_clap_dir, tmp_path):
    out = tmp_path / "out.csv"
    result = run("classify", folder, "--labels", LABELS, "--model", tiny_clap_dir, "--csv", out, "-q")
    assert result.exit_code == 3, result.output  # finished, some files failed: like index
    assert out.read_text().splitlines()[0] == ",".join(COLUMNS)
    rows = _rows(out.read_text())
    assert sorted(rows) == ["corrupt.wav", "dead_air.wav", "empty.mp3", "long.flac", "tone.wav"]  # the note is left out
    for name in ("corrupt.wav", "empty.mp3"):
        (row,) = rows[name]
        assert row["status"] == "failed" and row["error"] and "\n" not in row["error"] and row["best_label"] == ""
    for name, seconds in (("tone.wav", 1.5), ("long.flac", 3.0)):
        (row,) = rows[name]
        assert row["status"] == "ok" and row["error"] == "" and row["best_label"] in ("a steady tone", "someone speaking")
        assert float(row["duration_s"]) == pytest.approx(seconds, abs=0.01)
        assert 0.5 <= float(row["confidence"]) <= 1 and 0 < float(row["probability"]) < 1 and row["detected"] == "True"
        start, end = float(row["highlight_start_s"]), float(row["highlight_end_s"])
        assert float(row["best_start_s"]) <= start < end <= float(row["best_end_s"]) + 1e-6
        assert row["warning"] == ""
    assert rows["dead_air.wav"][0]["status"] == "ok" and rows["dead_air.wav"][0]["warning"] == "silent"  # a finding, not a failure
    assert "classified 3 files, failed 2; left out 1 file without an audio extension; rows in" in result.stderr


def test_stdout_csv_json_and_the_single_file_table(folder, tiny_clap_dir, tmp_path):
    to_stdout = run("classify", folder, "--labels", LABELS, "--model", tiny_clap_dir, "--csv", "-", "-q", "--no-highlight")
    assert to_stdout.exit_code == 3 and len(_rows(to_stdout.stdout)) == 5
    assert all(r["highlight_start_s"] == "" for rows in _rows(to_stdout.stdout).values() for r in rows)
    as_json = run("classify", folder / "day2", "--labels", LABELS, "--model", tiny_clap_dir, "--json", "-q")
    items = {Path(item["file"]).name: item for item in json.loads(as_json.stdout)}
    assert items["corrupt.wav"]["status"] == "failed" and items["corrupt.wav"]["error"]
    assert items["long.flac"]["status"] == "ok" and len(items["long.flac"]["labels"]) == 2
    single = run("classify", folder / "tone.wav", "--labels", LABELS, "--model", tiny_clap_dir)
    assert single.exit_code == 0 and "tone.wav  WAV" in single.stdout and "failed" not in single.output  # today's table
    both = run("classify", folder, "--labels", LABELS, "--model", tiny_clap_dir, "--csv", "-", "--json")
    assert both.exit_code == 2 and "stdout" in both.output


def test_thresholds_as_in_single_file_classify(folder, tiny_clap_dir):
    good = folder / "tone.wav"
    multi = _rows(run("classify", good, folder / "day2" / "long.flac", "--labels", LABELS, "--model", tiny_clap_dir,
                      "--csv", "-", "-q", "--multi-label", "--threshold", "-1").stdout)
    assert all(len(rows) == 2 and all(r["detected"] == "True" for r in rows) for rows in multi.values())  # a row per detected label
    strict = _rows(run("classify", good, "--labels", LABELS, "--model", tiny_clap_dir, "--csv", "-", "-q",
                       "--min-confidence", "1").stdout)
    (row,) = strict["tone.wav"]
    assert row["best_label"] and row["detected"] == "False" and row["highlight_start_s"] == ""  # heard, no alert
    hidden = _rows(run("classify", good, "--labels", LABELS, "--model", tiny_clap_dir, "--csv", "-", "-q",
                       "--min-score", "1").stdout)
    assert hidden["tone.wav"][0]["status"] == "ok" and hidden["tone.wav"][0]["best_label"] == ""  # nothing scores that high


def test_max_duration_is_per_file(folder, tiny_clap_dir):
    result = run("classify", folder / "tone.wav", folder / "day2" / "long.flac", "--labels", LABELS,
                 "--model", tiny_clap_dir, "--csv", "-", "-q", "--max-duration", "2")
    rows = _rows(result.stdout)
    assert result.exit_code == 3 and rows["tone.wav"][0]["status"] == "ok"
    assert rows["long.flac"][0]["status"] == "failed" and "limit" in rows["long.flac"][0]["error"]


def test_a_run_that_cannot_start_says_so_in_one_sentence(folder, tmp_path):
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    (quiet / "readme.txt").write_text("no audio here")
    model = tmp_path / "no-model-needed"  # each is refused before a model would load
    no_audio = run("classify", quiet, "--labels", LABELS, "--model", model)
    assert no_audio.exit_code == 1 and no_audio.output.count("\n") == 1
    assert "No audio files under" in no_audio.output and "1 file without an audio extension" in no_audio.output
    existing = tmp_path / "kept.csv"
    existing.write_text("precious\n")
    nowhere = run("classify", folder, "--labels", LABELS, "--model", model, "--csv", tmp_path / "missing" / "out.csv")
    assert nowhere.exit_code == 1 and nowhere.output.count("\n") == 1 and "does not exist" in nowhere.output
    unloadable = run("classify", folder, "--labels", LABELS, "--model", model, "--csv", existing)
    assert unloadable.exit_code == 1 and "Traceback" not in unloadable.output
    assert existing.read_text() == "precious\n"  # a run that could not start leaves an existing CSV as it was


def test_the_python_batch_api(folder, tiny_clap_dir):
    from indexer import classify_folder

    results = {Path(r.file).name: r for r in classify_folder([folder], LABELS, model=str(tiny_clap_dir), device="cpu")}
    assert sorted(results) == ["corrupt.wav", "dead_air.wav", "empty.mp3", "long.flac", "tone.wav"]
    assert not results["corrupt.wav"].ok and results["corrupt.wav"].rows()[0]["error"]
    assert results["tone.wav"].ok and results["tone.wav"].rows()[0]["best_label"] in ("a steady tone", "someone speaking")
