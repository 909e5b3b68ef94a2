"""Text a user or a file brought in (metadata values, file names, labels, run names) never reaches
the terminal as control characters (issue 20, item 16: ``search`` printed 5 ESC bytes from metadata
values in one table). Every CLI table and line escapes them with one function, ``output.shown``:
C0 controls (ESC, BEL), DEL and the C1 controls (U+009B alone is CSI to many terminals). CSV and
JSON outputs keep the data as it is."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from indexer.cli.main import cli
from indexer.cli.output import shown
from tests.audio_factory import RATE, tone

CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
"""Control characters in output bytes (newlines and tabs of the layout itself apart)."""
RED, CSI, TITLE = "\x1b[31m", "\x9b2J", "\x1b]0;owned\x07"


def _run(*args, columns: int = 300):
    result = CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": str(columns)}, catch_exceptions=False)
    return result


def _clean(result) -> bytes:
    printed = result.stdout_bytes + result.stderr_bytes
    assert not CONTROL.findall(printed), (CONTROL.findall(printed), printed.decode(errors="replace")[-1500:])
    return printed


@pytest.fixture(scope="module")
def archive(tiny_clap_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("terminal")
    drop = root / "drop"
    drop.mkdir()
    names = [f"esc {RED}red.wav", f"csi {CSI}.wav", "bell \x07.wav"]
    for i, name in enumerate(names):
        sf.write(drop / name, tone(440 * (i + 1), 3.0), RATE)
    (drop / f"broken {RED}.wav").write_bytes(b"not audio" * 40)
    meta = drop / "meta.csv"
    with open(meta, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "site", "note"])
        for name in names:
            writer.writerow([name, f"{RED}north\x1b[0m", f"{TITLE} {CSI} \x7f"])
    arch = root / "arch"
    result = _run("index", drop, "--archive", arch, "--model", tiny_clap_dir, "--metadata", meta, "-q")
    assert result.exit_code == 3, result.output  # finished, one file failed
    _clean(result)
    return arch, drop, tiny_clap_dir


def test_shown_escapes_c0_del_and_c1_and_keeps_the_rest():
    assert shown(f"a{RED}b{CSI}\x7f\u0085\n\t é ✓ [bold]") == "a\\x1b[31mb\\x9b2J\\x7f\\x85\\n\\t é ✓ [bold]"


def test_the_search_table_shows_metadata_and_names_escaped(archive):
    arch, _, model = archive
    result = _run("search", "tone 440", "--archive", arch, "--model", model)
    printed = _clean(result)
    assert b"\\x1b[31mnorth\\x1b[0m" in printed and b"\\x9b2J" in printed and b"esc \\x1b[31mred.wav" in printed


def test_csv_and_json_keep_the_data_as_it_is(archive):
    arch, _, model = archive
    rows = list(csv.DictReader(io.StringIO(_run("search", "tone 440", "--archive", arch, "--model", model, "--csv").output)))
    assert {row["meta.site"] for row in rows} == {f"{RED}north\x1b[0m"}
    assert {row["meta.note"] for row in rows} == {f"{TITLE} {CSI} \x7f"}
    hits = json.loads(_run("search", "tone 440", "--archive", arch, "--model", model, "--json").output)
    assert {Path(h["path"]).name for h in hits} >= {f"esc {RED}red.wav", f"csi {CSI}.wav"}


def test_info_and_its_failure_table(archive):
    arch, _, _ = archive
    printed = _clean(_run("info", "--archive", arch))
    assert b"broken \\x1b[31m.wav" in printed


def test_audits_their_names_labels_and_files(archive):
    arch, _, model = archive
    result = _run("audit", "run", "--labels", f"tone 440, tone {RED}1200", "--name", f"run {CSI}", "--threshold", "0",
                  "--watch", "--archive", arch, "--model", model)
    assert result.exit_code == 0, result.output
    printed = _clean(result)
    assert b"run \\x9b2J" in printed
    for args in (("audit", "list"), ("audit", "show", "1"), ("audit", "unwatch", "1")):
        result = _run(*args, "--archive", arch)
        assert result.exit_code == 0, result.output
        _clean(result)


def test_labels_marks_and_notes(archive):
    arch, _, _ = archive
    assert _run("label", "mark", f"siren {RED}", "--window", "1", "--note", f"heard {TITLE}", "--archive", arch).exit_code == 0
    for args in (("label", "list"), ("label", "show", f"siren {RED}")):
        result = _run(*args, "--archive", arch)
        assert result.exit_code == 0, result.output
        _clean(result)


def test_classify_of_a_file_named_with_escapes(archive):
    _, drop, model = archive
    result = _run("classify", drop / f"esc {RED}red.wav", "--labels", f"tone 440, {CSI} tone", "--model", model)
    assert result.exit_code == 0, result.output
    assert b"esc \\x1b[31mred.wav" in _clean(result)
    missing = _run("classify", drop / f"gone {RED}.wav", "--labels", "a, b", "--model", model)
    assert missing.exit_code != 0 and b"gone \\x1b[31m.wav" in _clean(missing)


def test_an_error_naming_a_file_is_one_escaped_sentence(archive, tmp_path):
    arch, _, model = archive
    clip = tmp_path / f"clip {RED}{CSI}.wav"
    clip.write_bytes(b"not audio" * 40)
    result = _run("search", "--like", clip, "--archive", arch, "--model", model)
    assert result.exit_code == 1 and b"Traceback" not in result.stderr_bytes
    assert b"clip \\x1b[31m\\x9b2J.wav" in _clean(result)
