"""Metadata named like soundtrace's own fields never shadows them, in any output: every user
column appears as ``meta.<column>`` (CLI tables, JSON, CSV, Parquet, DataFrames), and the
score, rank, label and ids are always soundtrace's own. The CSV here has a column named after
every field and header those outputs use."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from indexer import Archive, audit_runs
from indexer.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"

OWN_FIELDS = [
    # search rows (RecordingHit.to_dict) and the search table's headers
    "rank", "recording_id", "score", "start_s", "end_s", "channel", "window_id", "duration_s", "windows", "sample_rate",
    "channels", "format", "peak", "rms_db", "is_silent", "highlight_start_s", "highlight_score", "#", "recording",
    "best time", "window", "also at",
    # audit results, exports and the app's tables
    "file", "label", "best_label", "probability", "confidence", "percentile", "best_start_s", "best_end_s",
    "flagged_windows", "flagged_seconds", "flagged", "is_best", "best_window_id", "from (s)", "to (s)", "folder",
]


def run(*args, columns: int = 80):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": str(columns)})


def user_value(column: str, name: str) -> str:
    """What the CSV says for ``column`` of recording ``name``: a text no own field ever holds."""
    return f"user {column} of {name[:6]}"


@pytest.fixture(scope="module")
def archive(tiny_clap_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shadow")
    names = [p.name for p in SAMPLES.iterdir() if p.suffix != ".raw"]
    table = folder / "meta.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", *OWN_FIELDS])
        writer.writerows([[name, *(user_value(c, name) for c in OWN_FIELDS)] for name in names])
    arch = folder / "arch"
    result = run("index", SAMPLES, "--archive", arch, "--model", tiny_clap_dir, "--metadata", table, "-q")
    assert result.exit_code in (0, 3), result.output  # the headerless .raw fails without --raw-rate
    made = run("audit", "run", "--labels", "speech, music", "--threshold", "-1", "--archive", arch, "--json")
    assert made.exit_code == 0, made.output
    return arch, json.loads(made.output)["id"]


def metadata_columns(arch) -> list[str]:
    with Archive.open(arch, read_only=True) as opened:
        return opened.catalog.metadata_columns()


def test_search_json_and_csv_keep_their_own_fields_and_prefix_metadata(archive):
    arch, _ = archive
    with Archive.open(arch, read_only=True) as opened:
        truth = opened.search("someone speaking", k=5)
    rows = json.loads(run("search", "someone speaking", "-k", 5, "--archive", arch, "--json").output)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert [(r["score"], r["recording_id"], r["window_id"], r["path"]) for r in rows] == \
        [(h.score, h.recording_id, h.best.window_id, h.path) for h in truth]
    for row in rows:
        name = Path(row["path"]).name
        assert isinstance(row["windows"], list) and isinstance(row["channel"], int)
        for column in metadata_columns(arch):  # renamed ones too (channels -> meta_channels)
            assert row[f"meta.{column}"] == user_value(column.removeprefix("meta_"), name)
    text = run("search", "someone speaking", "-k", 5, "--archive", arch, "--csv").output
    header = next(csv.reader(io.StringIO(text)))
    assert len(header) == len(set(header))
    table = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["rank"]) for r in table] == [1, 2, 3, 4, 5]
    assert [float(r["score"]) for r in table] == pytest.approx([h.score for h in truth], abs=1e-12)
    assert table[0]["meta.score"] == user_value("score", Path(table[0]["path"]).name)


def test_search_table_heads_metadata_with_its_prefix(archive):
    arch, _ = archive
    with Archive.open(arch, read_only=True) as opened:
        best = opened.search("someone speaking", k=1)[0]
    out = run("search", "someone speaking", "-k", 1, "--archive", arch, columns=200).output
    assert "meta.rank" in out and "meta.score" in out  # the first four metadata columns are shown
    row = next(line for line in out.splitlines() if f"{best.score:.3f}" in line)
    assert str(best.best.window_id) in row and "user" not in row.split(f"{best.score:.3f}")[0]


def test_audit_outputs_keep_the_runs_label_and_prefix_metadata(archive, tmp_path):
    arch, run_id = archive
    shown = json.loads(run("audit", "show", run_id, "--archive", arch, "--json", "--limit", 100).output)
    assert shown["flagged"] and {r["label"] for r in shown["flagged"]} <= {"speech", "music"}
    assert all(r["meta.label"] == user_value("label", Path(r["file"]).name) for r in shown["flagged"])
    assert "label" in run("audit", "show", run_id, "--archive", arch).output
    out = tmp_path / "best.csv"
    assert run("audit", "export", run_id, "--archive", arch, "--csv", out).exit_code == 0
    header = next(csv.reader(out.open()))
    assert len(header) == len(set(header)) and header[:2] == ["file", "best_label"]
    rows = list(csv.DictReader(out.open()))
    assert {r["best_label"] for r in rows} <= {"speech", "music"}
    assert all(r["meta.best_label"] == user_value("best_label", Path(r["file"]).name) for r in rows)
    assert all(r["meta.file"] == user_value("file", Path(r["file"]).name) for r in rows)
    every = tmp_path / "all.parquet"
    assert run("audit", "export", run_id, "--archive", arch, "--parquet", every, "--all-labels").exit_code == 0
    table = pq.read_table(every)
    assert len(table.column_names) == len(set(table.column_names))
    assert set(table.column("label").to_pylist()) == {"speech", "music"}
    assert set(table.column("meta.label").to_pylist()) == {user_value("label", Path(p).name) for p in table.column("file").to_pylist()}


def test_the_python_apis_frames_have_one_column_per_name(archive):
    arch, run_id = archive
    with Archive.open(arch, read_only=True) as opened:
        frame = audit_runs.results(opened.catalog, run_id).to_pandas()
    assert frame.columns.is_unique
    assert set(frame["label"].value_counts().index) <= {"speech", "music"}  # raised with two 'label' columns
    assert (frame["meta.label"].str.startswith("user label")).all()
