"""Names and links that took each other's rows: a UTF-8 name spelling another file's escaped bytes
(issue 20, item 13), and a link into /proc that named a new file on every run and that ``--prune``
never removed (item 16).

A recording is keyed by its path when that is UTF-8 (every existing archive keeps its keys), else
by a text no real name can spell (``sources.path_key``); a link into the kernel's files is keyed by
the name it was found under."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from indexer import Archive, IndexOptions
from indexer.audio.sources import NOT_UTF8_MARK, discover, key_path, path_key, path_text
from tests import hostile_inputs
from tests.fakes import FakeEncoder

ROOT = Path(__file__).resolve().parents[1]


def _rows(archive) -> dict[str, tuple]:
    return {path: (status, kind, rid) for path, status, kind, rid in
            archive.catalog.con.execute("SELECT path, status, error_kind, id FROM recordings").fetchall()}


def _windows_of(archive, recording_id: int) -> int:
    return archive.catalog.one("SELECT count(*) FROM windows WHERE recording_id = ?", [recording_id])[0]


def _write_bad_name(folder: Path, raw_name: bytes, frequency: float = 440.0) -> Path:
    """A WAV whose name is the bytes ``raw_name`` (libsndfile cannot open such a name, so it is
    written under another and renamed)."""
    sf.write(folder / "staging.wav", hostile_inputs.good_audio(2.0, frequency), hostile_inputs.RATE)
    target = folder / os.fsdecode(raw_name)
    os.rename(folder / "staging.wav", os.fsencode(target))
    return target


def test_a_name_spelling_another_files_escaped_bytes_keeps_its_recording(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    literal = drop / "latin1-\\xe9t\\xe9.wav"  # valid UTF-8: backslash, x, e, 9
    sf.write(literal, hostile_inputs.good_audio(3.0, 660.0), hostile_inputs.RATE)
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        first = archive.index([drop])
        good_key = str(literal.resolve())
        status, _, good_id = _rows(archive)[good_key]
        assert first.indexed == 1 and status == "indexed" and _windows_of(archive, good_id) == 1
        bad = _write_bad_name(drop, b"latin1-\xe9t\xe9.wav")  # the bytes the literal name spells
        second = archive.index([drop])
        rows = _rows(archive)
        assert second.unchanged == 1 and len(second.failed) == 1, (second, rows)
        assert rows[good_key] == ("indexed", None, good_id) and _windows_of(archive, good_id) == 1
        bad_key = path_key(bad.resolve())
        assert bad_key != good_key and rows[bad_key][:2] == ("failed", "bad_file_name")
        third = archive.index([drop])
        assert third.unchanged == 2 and not third.failed and third.indexed == 0
        assert [Path(h.path).name for h in archive.search("tone 660", k=1)] == [literal.name]


def test_two_names_that_escape_to_the_same_text_keep_a_row_each(tmp_path):
    """``\\`` then ``xe9`` then the byte 0xE9, beside 0xE9 0xE9: backslashreplace gives both one text."""
    drop = tmp_path / "drop"
    drop.mkdir()
    one = _write_bad_name(drop, b"a\xe9\xe9.wav")
    two = _write_bad_name(drop, b"a\\xe9\xe9.wav")
    assert path_text(one) == path_text(two)
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        report = archive.index([drop])
        rows = _rows(archive)
    assert len(report.failed) == 2 and {path_key(one.resolve()), path_key(two.resolve())} <= set(rows)


@pytest.mark.parametrize("raw", [b"/a/b/plain.wav", b"/a/b/\xe9t\xe9.wav", b"/a/\xff/x.wav", b"/a/b/back\\slash\xe9.wav",
                                 b"/a/b/\\xe9\xe9.wav", b"/a/b/\\\\xe9.wav\xff", b"/a/b/caf\xc3\xa9.wav", b"/\xe9"])
def test_a_key_gives_back_its_path_and_no_real_name_spells_the_key_of_another(raw):
    path = Path(os.fsdecode(raw))
    key = path_key(path)
    assert key_path(key) == path
    key.encode("utf-8")  # the catalog stores it as text
    utf8 = raw.decode("utf-8", "replace") == os.fsdecode(raw)
    if utf8:
        assert key == str(path)  # existing archives keep their keys
    else:  # a real key is normalised: it never holds a "." component, so no real file has this key
        assert key.startswith(NOT_UTF8_MARK + "/") and str(Path(key)) != key


def test_discovery_lists_both_files_whose_names_used_to_collide(tmp_path):
    literal = tmp_path / hostile_inputs.LITERAL_ESCAPES
    sf.write(literal, hostile_inputs.good_audio(1.0), hostile_inputs.RATE)
    _write_bad_name(tmp_path, b"latin1-\xe9t\xe9-\xff.wav")
    found = discover([tmp_path])
    assert len(found.files) == 2 and len({f.key for f in found.files}) == 2


def test_pruning_removes_a_bad_names_row_once_its_file_is_gone_and_keeps_it_while_it_is_there(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    sf.write(drop / "good.wav", hostile_inputs.good_audio(2.0), hostile_inputs.RATE)
    bad = _write_bad_name(drop, b"gone-\xe9.wav")
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        assert archive.index([drop], IndexOptions(prune=True)).pruned == 0
        os.unlink(os.fsencode(bad))
        report = archive.index([drop], IndexOptions(prune=True))
        assert report.pruned == 1 and set(_rows(archive)) == {str((drop / "good.wav").resolve())}


# --- links into /proc (item 16) -------------------------------------------------------------------

INDEX_ONCE = """
import sys
from pathlib import Path
from indexer import Archive, IndexOptions
from tests.fakes import FakeEncoder
with Archive.open(Path(sys.argv[2]), encoder=FakeEncoder(), create=True) as archive:
    report = archive.index([Path(sys.argv[1])], IndexOptions(prune=sys.argv[3] == "prune"))
print(report.indexed, len(report.failed), report.unchanged, report.pruned)
"""


def _index_in_a_new_process(drop: Path, arch: Path, prune: bool = False) -> list[int]:
    """Each run its own process, as each ``soundtrace index`` is: /proc/self is another file in each."""
    done = subprocess.run([sys.executable, "-c", INDEX_ONCE, str(drop), str(arch), "prune" if prune else ""],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return [int(x) for x in done.stdout.split()]


def test_a_link_to_proc_self_is_one_failed_row_run_after_run(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    sf.write(drop / "good.wav", hostile_inputs.good_audio(2.0), hostile_inputs.RATE)
    os.symlink("/proc/self/status", drop / "status.wav")
    os.symlink("/proc/self/fd/0", drop / "stdin.wav")
    arch = tmp_path / "arch"
    assert _index_in_a_new_process(drop, arch) == [1, 2, 0, 0]
    for _ in range(2):
        assert _index_in_a_new_process(drop, arch) == [0, 0, 3, 0]  # the same rows, nothing new
    with Archive.open(arch, read_only=True) as archive:
        rows = _rows(archive)
        reason = archive.catalog.one("SELECT error FROM recordings WHERE path = ?", [str(drop / "status.wav")])[0]
    assert len(rows) == 3 and not any(p.startswith("/proc/") for p in rows), rows
    assert rows[str(drop / "status.wav")][:2] == ("failed", "not_a_file")
    assert reason == "status.wav is a link into /proc, the kernel's files, not a recording."


def test_pruning_removes_failed_rows_that_are_gone_or_no_longer_candidates(tmp_path):
    drop, elsewhere = tmp_path / "drop", tmp_path / "elsewhere"
    drop.mkdir()
    elsewhere.mkdir()
    sf.write(drop / "good.wav", hostile_inputs.good_audio(2.0), hostile_inputs.RATE)
    (drop / "junk.wav").write_bytes(b"not audio" * 100)
    (elsewhere / "junk.mp3").write_bytes(b"not audio" * 100)
    sf.write(elsewhere / "kept.wav", hostile_inputs.good_audio(2.0, 880.0), hostile_inputs.RATE)
    (elsewhere / "still-there.wav").write_bytes(b"not audio" * 100)
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop, elsewhere, Path("/proc/self/status")])
        assert len(_rows(archive)) == 6
        os.rename(drop / "junk.wav", drop / "junk.txt")  # still there, no longer a candidate
        (elsewhere / "junk.mp3").unlink()  # a failed file outside the folder pruned, gone
        report = archive.index([drop], IndexOptions(prune=True))
        rows = _rows(archive)
    assert report.pruned == 3, rows
    assert set(rows) == {str(p.resolve()) for p in (drop / "good.wav", elsewhere / "kept.wav", elsewhere / "still-there.wav")}


def test_the_old_rows_of_a_proc_link_go_with_the_next_prune(tmp_path):
    """An archive that ran before this fix holds a row per run, keyed /proc/<pid>/status."""
    drop = tmp_path / "drop"
    drop.mkdir()
    sf.write(drop / "good.wav", hostile_inputs.good_audio(2.0), hostile_inputs.RATE)
    os.symlink("/proc/self/status", drop / "status.wav")
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        con = archive.catalog.con
        for pid in (os.getpid(), 4_000_000):  # a live process's file and a dead one's
            con.execute("INSERT INTO recordings (id, path, file_name, status, error_kind, error, size_bytes, mtime, indexed_at)"
                        " SELECT max(id) + 1, ?, 'status', 'failed', 'unreadable', 'old', 0, 0, now() FROM recordings",
                        [f"/proc/{pid}/status"])
        report = archive.index([drop], IndexOptions(prune=True))
        rows = _rows(archive)
    assert report.pruned == 2 and not any(p.startswith("/proc/") for p in rows)


def test_the_corpus_link_into_proc_is_recorded_under_its_own_name(tmp_path):
    cases = {c.name: c for c in hostile_inputs.decoding_and_naming_traps(tmp_path / "corpus")}
    link = cases["link to /proc/self/status"].path
    [source] = discover([link]).files
    assert source.key == str(link) and source.problem.kind == "not_a_file"
    assert np.isfinite(source.mtime)
