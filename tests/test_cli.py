"""The CLI end to end with the tiny real CLAP loaded through the real from_pretrained path."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from indexer.cli.main import cli
from tests.audio_factory import write_sequence

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"


def run(*args: str) -> "click.testing.Result":  # noqa: F821
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def indexed(tiny_clap_dir, tmp_path_factory):
    arch = tmp_path_factory.mktemp("cli") / "arch"
    result = run("index", SAMPLES, "--archive", arch, "--model", tiny_clap_dir, "--metadata", ROOT / "data" / "metadata.csv",
                 "--raw-rate", "16000", "-q")
    assert result.exit_code == 0, result.output  # every sample indexed, the silent one flagged
    return arch


def test_index_reports_counts_and_failures(indexed):
    result = run("info", "--archive", indexed, "--json")
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["recordings"] == len(list(SAMPLES.iterdir())) and info["failed"] == 0 and info["failures"] == []
    assert info["windows"] == info["vectors"] > info["recordings"]
    assert info["dim"] == 32 and info["index_factory"] == "exact (float16)" and info["ann"] is None
    assert "agent" in info["metadata_columns"]


def test_rerun_is_incremental(indexed, tiny_clap_dir):
    result = run("index", SAMPLES, "--archive", indexed)
    assert result.exit_code == 0
    assert "indexed 0," in result.output and "nothing new to embed" in result.output
    assert "windows/s" not in result.output and "real time" not in result.output  # no empty bar, no 0x


def test_a_new_archive_says_what_it_does_before_the_bar(tiny_clap_dir, tmp_path):
    shutil.copy(SAMPLES / "tone_440hz_3s.flac", tmp_path / "a.flac")
    out = run("index", tmp_path / "a.flac", "--archive", tmp_path / "arch", "--model", tiny_clap_dir).output
    stages = [out.find(s) for s in ("loading the model", "looking for recordings", "indexing", "indexed 1,")]
    assert -1 not in stages and stages == sorted(stages), out
    # an existing archive loads its model for the first new window, and says so on the bar
    from indexer import Archive
    from indexer.config import EncoderConfig

    class Stages:
        def __init__(self):
            self.seen = []

        def stage(self, message):
            self.seen.append(message)

        def start(self, files, total_bytes):
            self.seen.append(f"start {files}")

        def file_done(self, *args):
            pass

        def windows_embedded(self, count):
            pass

        def finish(self):
            pass

    shutil.copy(SAMPLES / "beep_880hz_0.6s.flac", tmp_path / "b.flac")
    sink = Stages()
    with Archive.open(tmp_path / "arch", encoder_config=EncoderConfig(model=str(tiny_clap_dir))) as archive:
        archive.index([tmp_path], progress=sink)
    assert sink.seen == ["looking for recordings", "start 1", "loading the model", "indexing"]


def test_search_json_csv_and_table(indexed):
    result = run("search", "an angry customer complaining", "--archive", indexed, "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert all(0 <= h["start_s"] < h["end_s"] <= h["duration_s"] + 1e-6 for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    table = run("search", "an angry customer complaining", "--archive", indexed, "-k", "3")
    assert Path(hits[0]["path"]).name[:8] in table.output

    rows = list(csv.DictReader(io.StringIO(run("search", "beep", "--archive", indexed, "-k", "2", "--csv").output)))
    assert len(rows) == 2 and {"rank", "score", "path", "start_s", "end_s"} <= set(rows[0])


def test_search_where_and_dates(indexed):
    hits = json.loads(run("search", "speech", "--archive", indexed, "-k", "50", "--where", "site = 'leeds'", "--json").output)
    assert hits and all(h["meta.site"] == "leeds" for h in hits)
    clipped = json.loads(run("search", "speech", "--archive", indexed, "-k", "50", "--where", "is_clipped", "--json").output)
    assert [Path(h["path"]).name for h in clipped] == ["clipped_speech.flac"]
    dated = json.loads(run("search", "speech", "--archive", indexed, "-k", "50", "--since", "2024-05-03", "--until", "2024-05-03", "--json").output)
    assert dated and {h["meta.date"] for h in dated} == {"2024-05-03"}
    bad = run("search", "speech", "--archive", indexed, "--where", "read_csv('/etc/passwd') is not null")
    assert bad.exit_code == 1 and "not allowed" in bad.output


def test_search_like_excludes_the_query_span(indexed):
    clip = SAMPLES / "tone_1khz_25s.opus"
    hits = json.loads(run("search", "--like", f"{clip}:0-10", "--archive", indexed, "-k", "3", "--json").output)
    assert hits
    own = [h for h in hits if Path(h["path"]).name == clip.name]
    assert all(w["start_s"] >= 10 for h in own for w in h["windows"])
    window = hits[0]["window_id"]
    more = json.loads(run("search", "--like-window", window, "--archive", indexed, "-k", "3", "--json").output)
    assert all(w["window_id"] != window for h in more for w in h["windows"])


def test_search_needs_exactly_one_query(indexed):
    result = run("search", "--archive", indexed)
    assert result.exit_code == 2 and "exactly one" in result.output


def test_classify_json(tiny_clap_dir, tmp_path):
    path = write_sequence(tmp_path / "x.wav", [(440, 14)])
    result = run("classify", path, "--labels", "狗叫，玻璃破碎, dog barking, Dog barking!", "--model", tiny_clap_dir, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    labels = [s["label"] for s in payload["labels"]]
    assert sorted(labels) == sorted(["狗叫", "玻璃破碎", "dog barking"])
    assert sum(s["probability"] for s in payload["labels"]) == pytest.approx(1.0, abs=1e-5)
    scores = [s["score"] for s in payload["labels"]]
    assert scores == sorted(scores, reverse=True)
    assert sum(s["detected"] for s in payload["labels"]) == 1 and payload["labels"][0]["detected"]
    assert payload["labels"][0]["confidence"] >= 0.5
    assert all(s["best_end_s"] - s["best_start_s"] <= 10 for s in payload["labels"])


def test_classify_multi_label_threshold(tiny_clap_dir, tmp_path):
    path = write_sequence(tmp_path / "x.wav", [(440, 3)])
    result = run("classify", path, "--label", "a, with comma", "--label", "b", "--multi-label", "--threshold", "-1", "--json", "--model", tiny_clap_dir)
    payload = json.loads(result.output)
    assert [s["label"] for s in payload["labels"]] and all(s["detected"] for s in payload["labels"])
    assert "a, with comma" in [s["label"] for s in payload["labels"]]


def test_classify_warns_on_silence(tiny_clap_dir):
    result = run("classify", SAMPLES / "silence_10s.flac", "--labels", "speech, music", "--model", tiny_clap_dir)
    assert result.exit_code == 0 and "flat line" in result.output


def test_unreadable_file_is_one_sentence(tiny_clap_dir, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"definitely not audio" * 50)
    result = run("classify", bad, "--labels", "x", "--model", tiny_clap_dir)
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "Traceback" not in result.output


def test_missing_archive_is_one_sentence(tmp_path):
    result = run("search", "x", "--archive", tmp_path / "none")
    assert result.exit_code == 1 and "soundtrace index" in result.output


def test_offline_without_weights_says_how_to_get_them(tmp_path):
    """A real subprocess, as a user would hit it: no traceback, one sentence, non-zero exit."""
    wav = write_sequence(tmp_path / "x.wav", [(440, 2)])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "classify", str(wav), "--labels", "a, b"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "hf download laion/clap-htsat-fused" in lines[0] and "--model" in lines[0]


def test_index_refuses_a_second_model(indexed, tmp_path):
    other = tmp_path / "other-model"
    from indexer.model.tiny_clap import build_tiny_clap

    build_tiny_clap(other, seed=1)
    result = run("index", SAMPLES, "--archive", indexed, "--model", other, "-q")
    assert result.exit_code == 1 and "cannot be mixed" in result.output


def test_split_channels_index_each_side(tiny_clap_dir, tmp_path):
    arch = tmp_path / "arch"
    shutil.copy(SAMPLES / "call_stereo_30s.opus", tmp_path / "call.opus")
    result = run("index", tmp_path / "call.opus", "--archive", arch, "--model", tiny_clap_dir, "--channels", "split", "-q")
    assert result.exit_code == 0, result.output
    hits = json.loads(run("search", "customer", "--archive", arch, "-k", "1", "--windows", "10", "--json").output)
    assert {w["channel"] for w in hits[0]["windows"]} == {0, 1}
    # every hit says its channel: the table beside each time, the CSV's windows field in each entry
    table = run("search", "customer", "--archive", arch, "-k", "1", "--windows", "10").output
    best = hits[0]["windows"][0]
    assert f"ch{best['channel']}" in table.split(str(hits[0]["window_id"]))[0]
    rows = list(csv.DictReader(io.StringIO(run("search", "customer", "--archive", arch, "-k", "1", "--windows", "10", "--csv").output)))
    assert {entry.rsplit(" ", 1)[-1] for entry in rows[0]["windows"].split(";")} == {"ch0", "ch1"}
    # the archive keeps its channel mode: another one is refused in one sentence, none means its own
    again = run("index", tmp_path / "call.opus", "--archive", arch, "--channels", "mix", "-q")
    assert again.exit_code == 1 and "indexed with --channels split" in again.output and "Traceback" not in again.output
    same = run("index", tmp_path / "call.opus", "--archive", arch, "-q")
    assert same.exit_code == 0 and "unchanged 1" in same.output
    from indexer.archive.manifest import Manifest

    assert Manifest.load(arch).channels == "split"


def test_short_metadata_values_are_never_broken_across_lines(indexed):
    """Dates and sites whole at 80 columns (piped output), as many metadata columns as fit."""
    for columns in ("80", "120"):
        out = CliRunner().invoke(cli, ["search", "someone speaking angrily", "--archive", str(indexed), "-k", "5"],
                                 env={"COLUMNS": columns}).output
        assert all(len(line) <= int(columns) for line in out.splitlines())
        assert not re.search(r"2024-\d\d-\d?(?!\d)[ │]", out), out  # a date cut short by a line break
    assert "meta.date" in out and re.search(r"2024-\d\d-\d\d", out)


PAYS_FOR_WHAT_IT_USES = """
import sys
from indexer.cli.main import cli
try:
    cli(sys.argv[1:])
except SystemExit as exc:
    print("exit", exc.code, file=sys.stderr)
print("torch" in sys.modules, "transformers" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("command", [
    ["index", str(SAMPLES), "--raw-rate", "16000", "-q", "--model", "{model}"],  # every file unchanged
    ["search", "someone speaking angrily", "--json"],  # words the archive remembers (searched before)
    ["search", "someone speaking angrily", "--json", "--model", "{model}"],  # a named model loads only when needed
    ["search", "--like-window", "3", "--json"],
    ["info", "--json"],
])
def test_the_cli_loads_no_model_for_work_that_needs_none(indexed, tiny_clap_dir, command):
    import subprocess
    import sys

    from indexer import Archive
    from indexer.config import EncoderConfig

    with Archive.open(indexed, encoder_config=EncoderConfig(model=str(tiny_clap_dir))) as archive:
        archive.embed_text(["someone speaking angrily"])  # remembered from now on (as an audit would)
    args = [a.replace("{model}", str(tiny_clap_dir)) for a in command] + ["--archive", str(indexed)]
    done = subprocess.run([sys.executable, "-c", PAYS_FOR_WHAT_IT_USES, *args], cwd=ROOT, capture_output=True, text=True)
    assert done.stderr.strip().splitlines()[-1] == "False False", done.stderr[-2000:]
    assert "exit 0" in done.stderr or "exit None" in done.stderr, done.stderr[-2000:]


def test_scores_are_cosines_within_one(indexed):
    """A stored float16 vector is unit length only to about 1e-4: the window nearest a query made
    from it (a clip against its own audio) scores 1, not 1.00005."""
    import numpy as np

    from indexer import Archive
    from indexer.search.ranking import search_vector

    with Archive.open(indexed, read_only=True) as archive:
        vectors = archive.window_vectors(range(1, archive.catalog.window_count() + 1))
        norms = np.linalg.norm(vectors, axis=1)
        longest = int(norms.argmax())
        assert norms[longest] > 1.0  # the case this guards
        hits = search_vector(archive, vectors[longest] / norms[longest], k=3)
    assert hits[0].best.window_id == longest + 1 and hits[0].score == 1.0
    assert all(-1.0 <= w.score <= 1.0 for h in hits for w in h.windows)


def test_a_channel_mode_asked_for_is_kept_before_any_stereo_file(tiny_clap_dir, tmp_path):
    (tmp_path / "mono").mkdir()
    (tmp_path / "stereo").mkdir()
    shutil.copy(SAMPLES / "tone_440hz_3s.flac", tmp_path / "mono" / "a.flac")
    shutil.copy(SAMPLES / "call_stereo_30s.opus", tmp_path / "stereo" / "call.opus")
    arch = tmp_path / "arch"
    assert run("index", tmp_path / "mono", "--archive", arch, "--model", tiny_clap_dir, "--channels", "split", "-q").exit_code == 0
    assert run("index", tmp_path / "stereo", "--archive", arch, "-q").exit_code == 0  # no flag: the archive's split
    hits = json.loads(run("search", "a call", "--archive", arch, "-k", "5", "--windows", "10", "--json").output)
    call = next(h for h in hits if h["path"].endswith("call.opus"))
    assert {w["channel"] for w in call["windows"]} == {0, 1}
