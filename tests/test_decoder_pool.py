"""Decoding in a pool of processes: the archive is the same, to the bit, whatever the number of
decoders; a kill -9 mid-run with two decoders resumes to the uninterrupted archive; a decoder that
crashes on a hostile file fails that file alone."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from indexer import Archive, IndexOptions
from indexer.config import EncoderConfig
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder
from tests.test_pipeline import run_worker, snapshot

ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIO = ROOT / ".." / "shared" / "audio"


def archive_bytes(directory: Path, encoder) -> dict:
    """The catalog's content (rows, ids, vectors) and every segment file's bytes."""
    state = snapshot(directory, encoder)
    with Archive.open(directory, encoder=encoder, read_only=True) as archive:
        state["errors"] = archive.catalog.con.execute(
            "SELECT path, error_kind, error FROM recordings WHERE status = 'failed' ORDER BY path").fetchall()
    state["segment_files"] = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((directory / "vectors").glob("*")) if p.is_file()
    }
    return state


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    """The project's samples, the shared real recordings and format zoo (when present), and a
    corrupt and an empty file."""
    bad = tmp_path_factory.mktemp("bad")
    (bad / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    (bad / "empty.flac").write_bytes(b"")
    paths = [ROOT / "data" / "samples", bad]
    if SHARED_AUDIO.is_dir():
        paths.append(SHARED_AUDIO)
    return paths


@pytest.fixture(scope="module")
def tiny_encoder(tiny_clap_dir):
    from indexer.model.loading import load_encoder

    return load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu"))


@pytest.mark.slow
def test_the_archive_is_identical_whatever_the_number_of_decoders(corpus, tiny_encoder, tmp_path):
    states, reports = {}, {}
    for decoders in (1, 2, 4):
        arch = tmp_path / f"arch{decoders}"
        with Archive.open(arch, encoder=tiny_encoder, create=True) as archive:
            reports[decoders] = archive.index(corpus, IndexOptions(decoders=decoders))
        states[decoders] = archive_bytes(arch, tiny_encoder)
    one = states[1]
    assert reports[1].indexed > 20 and reports[1].failed, "the corpus holds files that index and files that fail"
    assert {Path(f.path).name for f in reports[1].failed} >= {"corrupt.wav", "empty.flac"}
    assert states[2] == one
    assert states[4] == one
    assert [(f.path, f.error_kind) for f in reports[4].failed] == [(f.path, f.error_kind) for f in reports[1].failed]


# --- kill -9 with two decoders -------------------------------------------------------------------

TWO_DECODERS = "IndexOptions(decoders=2)"


@pytest.fixture(scope="module")
def drop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drop")
    rng = np.random.default_rng(11)
    for i in range(30):
        freqs = rng.choice([300, 440, 700, 1200, 2000, 3700], size=int(rng.integers(1, 4)))
        write_sequence(folder / f"rec{i:02d}.wav", [(float(f), 10) for f in freqs])
    (folder / "rec15_broken.wav").write_bytes(b"not audio at all")
    return folder


@pytest.mark.parametrize("kill_after_batches", [2, 9])
def test_kill_9_with_two_decoders_then_rerun_equals_clean_run(drop, tmp_path, kill_after_batches):
    clean = tmp_path / "clean" / "arch"
    clean.parent.mkdir()
    run_worker(clean, drop, None, TWO_DECODERS)
    arch = tmp_path / "killed" / "arch"
    arch.parent.mkdir()
    run_worker(arch, drop, kill_after_batches, TWO_DECODERS)
    partial = snapshot(arch) if (arch / "manifest.json").exists() else {"recordings": []}
    expected = archive_bytes(clean, FakeEncoder())
    assert len(partial["recordings"]) < len(expected["recordings"])
    run_worker(arch, drop, None, TWO_DECODERS)
    assert archive_bytes(arch, FakeEncoder()) == expected


# --- a decoder crash -----------------------------------------------------------------------------

CRASHING_DECODER = '''
import os
import indexer.audio.decode as decode

_stream = decode.stream


def stream(path, *args, **kwargs):
    """A decoder library that dies on one file, as a native crash would (SIGSEGV)."""
    if "crash" in os.path.basename(str(path)):
        os.kill(os.getpid(), 11)
    return _stream(path, *args, **kwargs)


decode.stream = stream
'''


def test_a_decoder_crashing_on_a_file_with_two_decoders_fails_that_file_alone(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASHING_DECODER)  # loaded by every decoding process
    monkeypatch.setenv("PYTHONPATH", str(site))
    folder = tmp_path / "drop"
    for i in range(8):
        write_sequence(folder / f"f{i}.wav", [(440 + 100 * i, 10)] * 2)
    write_sequence(folder / "f3_crash.wav", [(500, 10)])
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        report = archive.index([folder], IndexOptions(decoders=2))
        rows = archive.catalog.con.execute(
            "SELECT file_name, status, error_kind, (SELECT count(*) FROM windows w WHERE w.recording_id = r.id)"
            " FROM recordings r ORDER BY file_name").fetchall()
    assert [(f.error_kind, Path(f.path).name) for f in report.failed] == [("decoder_crash", "f3_crash.wav")]
    assert "f3_crash.wav crashed the audio decoder" in report.failed[0].error
    assert rows == [
        (f"f{i}.wav", "indexed", None, 2) for i in range(4)
    ] + [("f3_crash.wav", "failed", "decoder_crash", 0)] + [(f"f{i}.wav", "indexed", None, 2) for i in range(4, 8)]
    assert report.indexed == 8 and report.windows_added == 16


@pytest.mark.parametrize(("cores", "expected"), [(1, 2), (2, 2), (3, 2), (16, 15)])
def test_the_default_is_the_cores_but_the_models_and_at_least_two(monkeypatch, cores, expected):
    from indexer.indexing import decoder_pool

    monkeypatch.setattr(decoder_pool.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert decoder_pool.default_decoders() == expected
