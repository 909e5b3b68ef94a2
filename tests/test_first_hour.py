"""What a newcomer meets in the first hour, from the command line: a run that cannot start creates
nothing, exit statuses a nightly job can act on, silence indexed and flagged, honest single-label
classification, and messages that say what to do next."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from indexer.cli.main import cli
from tests.audio_factory import write_sequence

ROOT = Path(__file__).resolve().parents[1]


def run(*args) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- index: nothing created when it cannot start; exit statuses ------------------------------------


@pytest.mark.parametrize("problem", ["missing folder", "missing metadata", "metadata without a key", "bad label set"])
def test_a_run_that_cannot_start_creates_nothing(tiny_clap_dir, tmp_path, problem):
    drop = tmp_path / "drop"
    write_sequence(drop / "a.wav", [(440, 3)])
    arch = tmp_path / "arch"
    args = {
        "missing folder": [tmp_path / "no-such-folder"],
        "missing metadata": [drop, "--metadata", tmp_path / "absent.csv"],
        "metadata without a key": [drop, "--metadata", tmp_path / "nokey.csv"],
        "bad label set": [drop, "--audit", tmp_path / "bad.yaml"],
    }[problem]
    (tmp_path / "bad.yaml").write_text("name: x\nlabels: [a]\ntreshold: 3\n")
    (tmp_path / "nokey.csv").write_text("agent,site\nA1,north\n")
    result = run("index", *args, "--archive", arch, "--model", tiny_clap_dir, "-q")
    assert result.exit_code in (1, 2), result.output
    assert not arch.exists(), sorted(p.name for p in arch.iterdir())
    assert not result.output.startswith("\n")
    if problem == "missing folder":
        assert result.exit_code == 1 and lines(result.output) == [f"Error: {tmp_path / 'no-such-folder'} does not exist; nothing was indexed."]


def test_exit_status_tells_a_nightly_job_what_happened(tiny_clap_dir, tmp_path):
    drop = tmp_path / "drop"
    write_sequence(drop / "a.wav", [(440, 3)])
    arch = tmp_path / "arch"
    assert run("index", drop, "--archive", arch, "--model", tiny_clap_dir, "-q").exit_code == 0
    assert run("index", drop, "--archive", arch, "-q").exit_code == 0  # unchanged is success
    (drop / "broken.wav").write_bytes(b"RIFF....WAVEjunk" * 20)
    some_failed = run("index", drop, "--archive", arch, "-q")
    assert some_failed.exit_code == 3
    assert "failed 1" in some_failed.output and "broken.wav" in some_failed.output
    assert run("index", drop, "--archive", arch, "-q").exit_code == 0  # a known failure, unchanged: nothing new went wrong
    assert run("index", "--archive", arch).exit_code == 2  # click's usage error
    assert "Exit status: 0 when every file" in run("index", "--help").output


def test_a_silent_recording_is_indexed_and_flagged_not_failed(tiny_clap_dir, tmp_path):
    drop = tmp_path / "drop"
    write_sequence(drop / "dead_air.wav", [(0, 12)])
    write_sequence(drop / "talk.wav", [(440, 12)])
    arch = tmp_path / "arch"
    result = run("index", drop, "--archive", arch, "--model", tiny_clap_dir, "-q")
    assert result.exit_code == 0 and "failed 0" in result.output
    found = run("search", "anything", "--archive", arch, "--where", "is_silent", "--json")
    assert [Path(h["path"]).name for h in json.loads(found.output)] == ["dead_air.wav"]
    counted = run("audit", "run", "--labels", "speech, music", "--archive", arch, "--where", "is_silent", "--json")
    assert counted.exit_code == 0, counted.output
    assert json.loads(counted.output)["windows_scored"] == 2  # the dead call's two windows were audited


def test_the_readme_quickstart_indexes_every_sample_without_a_failure(tiny_clap_dir, tmp_path):
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "soundtrace index data/samples" in line)
    assert "--raw-rate 16000" in command
    result = run("index", ROOT / "data" / "samples", "--metadata", ROOT / "data" / "metadata.csv", "--raw-rate", "16000",
                 "--archive", tmp_path / "arch", "--model", tiny_clap_dir, "-q")
    assert result.exit_code == 0 and "failed 0" in result.output, result.output


# --- classify ------------------------------------------------------------------------------------------


def test_one_label_claims_no_probability_or_confidence(tiny_clap_dir, tmp_path):
    path = write_sequence(tmp_path / "x.wav", [(440, 4)])
    payload = json.loads(run("classify", path, "--labels", "dog barking", "--model", tiny_clap_dir, "--json").output)
    (label,) = payload["labels"]
    assert label["probability"] is None and label["confidence"] is None
    assert label["confidence_level"].startswith("n/a")
    table = run("classify", path, "--labels", "dog barking", "--model", tiny_clap_dir).output
    assert "(high)" not in table and "1.000" not in table and "need a second label" in table


def test_a_detected_label_is_refined_to_the_seconds_that_matter(tiny_clap_dir, tmp_path):
    path = write_sequence(tmp_path / "x.wav", [(440, 4), (2000, 6)])
    payload = json.loads(run("classify", path, "--labels", "a tone, a hum", "--model", tiny_clap_dir, "--json").output)
    top = payload["labels"][0]
    start, end = top["highlight"]
    assert top["best_start_s"] <= start < end <= top["best_end_s"] and 1.0 <= end - start <= 3.0
    assert all(s["highlight"] is None for s in payload["labels"][1:])
    quick = json.loads(run("classify", path, "--labels", "a tone, a hum", "--model", tiny_clap_dir, "--json", "--no-highlight").output)
    assert quick["labels"][0]["highlight"] is None


def test_help_says_what_each_command_defaults_to():
    classify_help = run("classify", "--help").output
    assert "the archive's" not in classify_help and "laion/clap-htsat-fused" in classify_help
    assert "SOUNDTRACE_MODEL" in classify_help and "SOUNDTRACE_MODEL" in run("search", "--help").output
    assert "--model" in run("app", "--help").output and "--cache-dir" in run("app", "--help").output


# --- messages ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tiny_clap_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    write_sequence(root / "drop" / "a.wav", [(440, 3)])
    (root / "drop" / "broken.flac").write_bytes(b"fLaC" + b"\x00" * 200)
    run("index", root / "drop", "--archive", root / "arch", "--model", tiny_clap_dir, "-q")
    return root


def test_info_shows_whole_seconds_and_reasons_without_the_path_again(small):
    output = run("info", "--archive", small / "arch").output
    when = next(line for line in output.splitlines() if "last indexed" in line)
    assert "." not in when.split("last indexed", 1)[1].strip(" │")  # no microseconds
    broken = str((small / "drop" / "broken.flac").resolve())
    reason_line = next(line for line in output.splitlines() if "looks like FLAC" in line or "broken" in line)
    assert output.count(broken) <= 1 and f"{broken}:" not in reason_line


def test_unknown_columns_list_only_what_a_user_can_filter_on(small):
    result = run("search", "x", "--archive", small / "arch", "--where", "agnt = 'A17'")
    assert result.exit_code == 1
    known = result.output.split("known columns:", 1)[1]
    for internal in ("content_hash", "decoder", "mtime", "status", "error_kind", "indexed_at"):
        assert internal not in known
    for usable in ("duration_s", "is_silent", "path", "modified_at"):
        assert usable in known


def test_searching_an_empty_archive_says_how_to_fill_it(tiny_clap_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    run("index", tmp_path / "empty", "--archive", tmp_path / "arch", "--model", tiny_clap_dir, "-q")
    result = run("search", "tone", "--archive", tmp_path / "arch")
    assert result.exit_code == 0
    assert "holds no recordings yet" in result.output and "soundtrace index FOLDER --archive" in result.output
    assert "with these filters" not in result.output


# --- the app command -----------------------------------------------------------------------------------


def test_the_app_gets_the_model_flags(tiny_clap_dir, tmp_path):
    from indexer.config import EncoderConfig
    from search_app.launch import command

    argv = command(tmp_path, 8600, "127.0.0.1", EncoderConfig(model=str(tiny_clap_dir), device="cpu", cache_dir="/c"))
    after = argv[argv.index("--") + 1:]
    assert f"--model={tiny_clap_dir}" in after and "--device=cpu" in after and "--cache-dir=/c" in after


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_soundtrace_app_stops_the_server(tiny_clap_dir, tmp_path, sig):
    port = _free_port()
    env = {**os.environ, "SOUNDTRACE_MODEL": str(tiny_clap_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer.cli", "app", "--archive", tmp_path / "arch", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not _serving(port) and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.3)
        assert _serving(port)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        time.sleep(0.5)
        assert not _serving(port), "the Streamlit server outlived the soundtrace app it was started by"
    finally:
        if proc.poll() is None:
            proc.kill()
