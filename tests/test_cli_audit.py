"""`soundtrace audit ...` end to end on the tiny CLAP: run, list, show, export (with refined
highlights), diff, standing audits through `index --audit`, and label-set errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from indexer.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
LABELSETS = ROOT / "data" / "labelsets"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def archive(tiny_clap_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("drop")
    for sample in SAMPLES.iterdir():
        if sample.name != "tone_1khz_25s.opus":  # kept back for the standing-audit test
            shutil.copy(sample, folder / sample.name)
    arch = folder.parent / "arch"
    result = run("index", folder, "--archive", arch, "--model", tiny_clap_dir, "--metadata", ROOT / "data" / "metadata.csv",
                 "--raw-rate", "16000", "-q")
    assert result.exit_code == 0, result.output
    return arch, folder


def test_audit_run_list_show(archive):
    arch, _ = archive
    result = run("audit", "run", LABELSETS / "call_centre.yaml", "--archive", arch, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["name"] and payload["mode"] == "multi-label" and payload["windows_scored"] > 0
    assert {c["label"] for c in payload["counts"]} == set(payload["labels"])
    runs = json.loads(run("audit", "list", "--archive", arch, "--json").output)
    assert payload["id"] in [r["id"] for r in runs]
    shown = run("audit", "show", str(payload["id"]), "--archive", arch)
    assert shown.exit_code == 0 and payload["name"] in shown.output and "flagged recordings" in shown.output


def test_audit_inline_and_export_with_refined_highlights(archive, tmp_path):
    arch, _ = archive
    made = json.loads(run("audit", "run", "--labels", "speech, music, noise", "--mode", "exclusive", "--threshold", "-1",
                          "--archive", arch, "--json").output)
    out = tmp_path / "audit.csv"
    result = run("audit", "export", str(made["id"]), "--archive", arch, "--csv", out, "--refine", "3")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert rows and list(rows[0])[:6] == ["file", "best_label", "score", "confidence", "highlight_start_s", "highlight_end_s"]
    assert {"meta.agent", "meta.site", "meta.date"} <= set(rows[0])
    refined = [r for r in rows[:3] if float(r["highlight_end_s"]) - float(r["highlight_start_s"]) <= 3.0 + 1e-6]
    assert len(refined) == 3  # the three best were refined to at most 3 s
    parquet = tmp_path / "audit.parquet"
    assert run("audit", "export", str(made["id"]), "--archive", arch, "--parquet", parquet, "--all-labels").exit_code == 0
    assert pq.read_table(parquet).num_rows == 3 * len(rows)


def test_audit_diff(archive):
    arch, _ = archive
    low = json.loads(run("audit", "run", "--labels", "speech, music", "--mode", "multi-label", "--threshold", "-1", "--archive", arch, "--json").output)
    high = json.loads(run("audit", "run", "--labels", "speech, music", "--mode", "multi-label", "--threshold", "1", "--archive", arch, "--json").output)
    change = json.loads(run("audit", "diff", str(low["id"]), str(high["id"]), "--archive", arch, "--json").output)
    assert change["newly_flagged"] == [] and len(change["cleared"]) == 2 * low["counts"][0]["flagged_recordings"]


def test_a_diff_compares_only_what_both_runs_scored(archive):
    """A run narrowed by a filter against one over the whole archive: recordings the narrow run
    never scored are neither cleared nor newly flagged, and the diff says how the scopes differ."""
    arch, _ = archive
    args = ("--labels", "speech, music", "--mode", "multi-label", "--threshold", "-1", "--archive", arch, "--json")
    everything = json.loads(run("audit", "run", *args).output)
    leeds = json.loads(run("audit", "run", *args, "--where", "site = 'leeds'").output)
    assert leeds["filters"]["where"] == "site = 'leeds'"  # an object, not JSON inside a string
    for a, b in ((everything, leeds), (leeds, everything)):
        change = json.loads(run("audit", "diff", a["id"], b["id"], "--archive", arch, "--json").output)
        assert change["newly_flagged"] == [] and change["cleared"] == []
        scope = change["scope"]
        leeds_scored = 4  # data/metadata.csv: four recordings at leeds
        assert scope["recordings_compared"] == scope["b" if b is leeds else "a"]["recordings_scored"] == leeds_scored
        assert scope["a"]["recordings_scored"] + scope["b"]["recordings_scored"] == leeds_scored + len(list(SAMPLES.iterdir())) - 1
        assert {c["flagged_a"] for c in change["counts"]} == {c["flagged_b"] for c in change["counts"]} == {leeds_scored}
    text = run("audit", "diff", everything["id"], leeds["id"], "--archive", arch).output
    assert "filters: where site = 'leeds'" in text and "compared: the 4 recordings both runs scored" in text
    assert "filters: where site = 'leeds'" in run("audit", "show", leeds["id"], "--archive", arch).output


def test_nothing_flagged_says_why(archive, tmp_path):
    arch, _ = archive
    strict = json.loads(run("audit", "run", "--labels", "speech, music", "--threshold", "1", "--archive", arch, "--json").output)
    out = run("audit", "show", strict["id"], "--archive", arch).output
    assert "nothing flagged:" in out and "below its threshold 1\n" in out and "speech: best score" in out
    unsure = tmp_path / "unsure.yaml"
    unsure.write_text("name: unsure\nmode: multi-label\nthreshold: -1\nmin_confidence: 0.99\nlabels: [speech, music]\n")
    out = run("audit", "run", unsure, "--archive", arch).output
    assert "nothing flagged:" in out and "below the set's min_confidence 0.99" in out, out
    reasons = json.loads(run("audit", "show", "unsure", "--archive", arch, "--json").output)["unflagged"]
    assert {r["label"] for r in reasons} == {"speech", "music"} and all(r["best_confidence"] < 0.99 for r in reasons)


def test_an_export_to_a_missing_folder_is_one_sentence(archive, tmp_path):
    arch, _ = archive
    made = json.loads(run("audit", "run", "--labels", "speech", "--archive", arch, "--json").output)
    for flag, name in (("--csv", "x.csv"), ("--parquet", "x.parquet")):
        result = run("audit", "export", made["id"], "--archive", arch, flag, tmp_path / "missing" / name)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output.strip() == f"Error: Cannot write the export to {tmp_path / 'missing' / name}: the folder " \
                                        f"{tmp_path / 'missing'} does not exist."


def test_index_with_standing_audit_reports_new_flags(archive):
    arch, folder = archive
    labelset = folder.parent / "standing.yaml"
    labelset.write_text("name: everything\nmode: multi-label\nthreshold: -1\nlabels:\n  - a tone\n")
    first = run("index", folder, "--archive", arch, "--audit", labelset, "-q")
    assert first.exit_code == 0, first.output
    assert "audit" in first.output and "(everything)" in first.output
    shutil.copy(SAMPLES / "tone_1khz_25s.opus", folder / "tone_1khz_25s.opus")
    second = run("index", folder, "--archive", arch, "--audit", labelset, "-q")
    assert second.exit_code == 0, second.output
    assert "1 recordings scored, 1 new flags" in second.output and "tone_1khz_25s.opus" in second.output


def test_invalid_label_set_names_the_line(archive, tmp_path):
    arch, _ = archive
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlabels:\n  - a\ntreshold: 0.3\n")
    result = run("audit", "run", bad, "--archive", arch)
    assert result.exit_code == 1 and "bad.yaml:4:" in result.output and "threshold" in result.output
    assert run("audit", "show", "999", "--archive", arch).exit_code == 1


def test_a_label_set_run_again_needs_no_model_and_model_flags_reach_audits(tiny_clap_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_clap_dir, model)
    arch = tmp_path / "arch"
    assert run("index", SAMPLES / "tone_440hz_3s.flac", SAMPLES / "white_noise_5s.opus", "--archive", arch, "--model", model, "-q").exit_code == 0
    first = run("audit", "run", "--labels", "tone, noise", "--archive", arch, "--json")
    assert first.exit_code == 0, first.output
    shutil.rmtree(model)  # the archive's model is gone: remembered words still score
    again = run("audit", "run", "--labels", "tone, noise", "--archive", arch, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["counts"] == json.loads(first.output)["counts"]
    new_words = run("audit", "run", "--labels", "a siren", "--archive", arch)
    assert new_words.exit_code == 1 and "Traceback" not in new_words.output and "--model" in new_words.output
    given = run("audit", "run", "--labels", "a siren", "--archive", arch, "--model", tiny_clap_dir, "--device", "cpu")
    assert given.exit_code == 0, given.output


def test_an_edited_label_set_watched_again_replaces_its_standing_run(archive, tmp_path):
    arch, folder = archive
    labelset = tmp_path / "edited.yaml"
    labelset.write_text("name: edited\nmode: multi-label\nthreshold: -1\nlabels:\n  - a tone\n")
    first = json.loads(run("audit", "run", labelset, "--watch", "--archive", arch, "--json").output)
    labelset.write_text("name: edited\nmode: multi-label\nthreshold: -1\nlabels:\n  - a beep\n")
    again = run("index", folder, "--archive", arch, "--audit", labelset, "-q")
    assert again.exit_code == 0 and f"replaces standing run {first['id']}" in again.output
    standing = [r for r in json.loads(run("audit", "list", "--archive", arch, "--json").output) if r["name"] == "edited"]
    assert [(r["labels"], r["standing"]) for r in standing] == [(["a tone"], False), (["a beep"], True)]
    out = run("audit", "watch", labelset, "--archive", arch)
    assert out.exit_code == 0 and f"replaces standing run {standing[1]['id']}" in out.output
