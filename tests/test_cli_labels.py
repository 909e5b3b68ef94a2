"""``soundtrace label`` and ``search --label`` end to end, through the tiny real CLAP.

Near variants of two real recordings (gain, a little noise, a time shift): marking some variants
of clip A positive and of clip B negative makes the learned label rank A's other variants above B's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from indexer.audio import decode as audio
from indexer.cli.main import cli
from indexer.cli.output import format_seconds

ROOT = Path(__file__).resolve().parents[1]
CLIPS = {"a": ROOT / "data" / "samples" / "complaint_angry.opus", "b": ROOT / "data" / "samples" / "hold_music_12s.opus"}


def run(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _variants(samples: np.ndarray, rng) -> list[np.ndarray]:
    shift = 4_800  # 0.1 s
    return [
        samples, samples * 0.5, samples * 0.8 + 0.003 * rng.standard_normal(len(samples)).astype(np.float32),
        np.concatenate([np.zeros(shift, np.float32), samples[:-shift]]), samples * 1.2, samples * 0.9 + 0.002 * rng.standard_normal(len(samples)).astype(np.float32),
    ]


@pytest.fixture(scope="module")
def archive(tiny_clap_dir, tmp_path_factory):
    drop = tmp_path_factory.mktemp("variants")
    rng = np.random.default_rng(0)
    for name, path in CLIPS.items():
        _, samples = audio.load(path, end_s=9.0)
        for i, variant in enumerate(_variants(samples.mean(axis=0), rng)):
            sf.write(drop / f"{name}{i}.wav", np.clip(variant, -1, 1), 48_000)
    arch = tmp_path_factory.mktemp("arch") / "archive"
    run("index", drop, "--archive", arch, "--model", tiny_clap_dir)
    return arch


def _window_of(arch, stem) -> int:
    hits = json.loads(run("search", "anything", "--archive", arch, "-k", "20", "--json"))
    return next(h["window_id"] for h in hits if Path(h["path"]).stem == stem)


def test_marks_learn_and_rank_the_other_variants_of_a_above_those_of_b(archive, tmp_path):
    for stem in ("a0", "a1", "a2"):
        run("label", "mark", "clip a", "--window", _window_of(archive, stem), "--archive", archive)
    marks = tmp_path / "marks.csv"
    marks.write_text("window_id,positive\n" + "".join(f"{_window_of(archive, s)},0\n" for s in ("b0", "b1", "b2")))
    run("label", "mark", "clip a", "--csv", marks, "--archive", archive)
    listed = json.loads(run("label", "list", "--archive", archive, "--json"))
    assert [(x["label"], x["positives"], x["negatives"]) for x in listed] == [("clip a", 3, 3)]
    learned = run("label", "learn", "clip a", "--archive", archive)
    assert "version 1" in learned and "ROC-AUC" in learned and "text alone" in learned
    hits = json.loads(run("search", "--label", "clip a", "--archive", archive, "-k", "12", "--json"))
    ranked = [Path(h["path"]).stem for h in hits if Path(h["path"]).stem not in {"a0", "a1", "a2", "b0", "b1", "b2"}]
    assert sorted(ranked[:3]) == ["a3", "a4", "a5"] and sorted(ranked[3:6]) == ["b3", "b4", "b5"]
    shown = run("label", "show", "clip a", "--archive", archive)
    assert shown.count("✓") == 3 and shown.count("✗") == 3 and "Learned version 1" in shown
    suggested = json.loads(run("label", "suggest", "clip a", "-k", "4", "--archive", archive, "--json"))
    assert len(suggested) == 4 and not {Path(s["path"]).stem for s in suggested} & {"a0", "a1", "a2", "b0", "b1", "b2"}
    lines = run("label", "suggest", "clip a", "-k", "4", "--archive", archive).splitlines()
    first = suggested[0]  # times as a player shows them: 0:00.0–0:04.3, not 0-4.298
    assert lines[0].endswith(f"{format_seconds(first['start_s'])}–{format_seconds(first['end_s'])}") and str(first["window_id"]) in lines[0]


def test_an_audit_with_a_learned_label_records_its_version(archive, tmp_path):
    run("label", "learn", "clip a", "--archive", archive)  # whatever the test order: a learned version exists
    labelset = tmp_path / "learned.yaml"
    labelset.write_text("name: learned clips\nmode: multi-label\nlabels:\n  - learned: clip a\n  - music\n")
    out = json.loads(run("audit", "run", labelset, "--archive", archive, "--json"))
    assert list(out["learned_versions"]) == ["clip a"] and out["learned_versions"]["clip a"] >= 1
    shown = run("audit", "show", str(out["id"]), "--archive", archive)
    assert "learned 'clip a' version" in shown


def test_label_errors_are_one_sentence(archive):
    result = CliRunner().invoke(cli, ["search", "--label", "never learned", "--archive", str(archive)])
    assert result.exit_code == 1 and "There is no learned label" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["label", "mark", "x", "--window", "987654", "--archive", str(archive)])
    assert result.exit_code == 1 and "No indexed window has the id 987654" in result.output
    result = CliRunner().invoke(cli, ["label", "mark", "x", "--archive", str(archive)])
    assert result.exit_code == 2 and "--window ID" in result.output


def test_the_text_query_alone_does_not_separate_the_variants(archive):
    """What the learned label is measured against: the words "clip a" mean nothing to CLAP."""
    hits = json.loads(run("search", "clip a", "--archive", archive, "-k", "12", "--json"))
    ranked = [Path(h["path"]).stem for h in hits if Path(h["path"]).stem not in {"a0", "a1", "a2", "b0", "b1", "b2"}]
    assert sorted(ranked[:3]) != ["a3", "a4", "a5"]
