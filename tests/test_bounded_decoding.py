"""Decoding memory follows samples, never seconds: a block holds at most ``MAX_BLOCK_SAMPLES``
samples (frames x channels) whatever the rate and channel count, the value check makes no copy
of a block, and a file of more channels than ``MAX_CHANNELS`` is refused in one sentence.

Peak memory is measured as the peak resident size of a fresh process (``resource.getrusage``)
decoding one crafted file from ``tests.hostile_inputs``: a 170 KB FLAC (8 channels at 655 kHz)
took 1.2 GB this way before blocks were bounded by samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from indexer.audio import decode
from indexer.audio.formats import AudioInfo
from indexer.audio.guards import MAX_BLOCK_SAMPLES, MAX_CHANNELS, block_frames, check_values
from indexer.config import DecodeOptions
from indexer.errors import InvalidSamplesError, UnsupportedFormatError
from tests import hostile_inputs

ROOT = Path(__file__).resolve().parents[1]

PEAK_LIMIT_MB = 300
"""Growth of a fresh process's peak RSS while decoding one file and cutting its windows: blocks of
16 MB, a window buffer per stream and their copies stay well inside it (measured: 78 MB mixing
the FLAC, 120 MB keeping its 8 channels apart); 30 s blocks took 1.2 GB."""

DECODE_ONE = """
import json, resource, sys
from indexer.audio import decode
from indexer.audio.windows import QualityAccumulator, cut_windows
from indexer.config import DecodeOptions, WindowConfig
from indexer.errors import AudioError

decode.stream(sys.argv[2], DecodeOptions())  # libraries loaded and warmed on a small file first
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = "decoded"
try:
    info, blocks = decode.stream(sys.argv[1], DecodeOptions(channels=sys.argv[3]))
    quality, windows = QualityAccumulator(), 0
    for window in cut_windows(blocks, WindowConfig()):
        quality.add_window(window)
        windows += 1
except AudioError as exc:
    outcome = str(exc)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (peak - before) / 1024, "outcome": outcome}))
"""


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    cases = {case.name: case.path for case in hostile_inputs.decoding_and_naming_traps(folder)}
    small = folder / "small.wav"
    import soundfile as sf

    sf.write(small, hostile_inputs.good_audio(1.0), hostile_inputs.RATE)
    return cases, small


def _decode_in_a_fresh_process(path: Path, small: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", DECODE_ONE, str(path), str(small), mode], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["mix", "split"])
@pytest.mark.parametrize("name", ["flac 8 ch at 655 kHz", "wav 16 ch at 768 kHz"])
def test_a_small_file_of_many_channels_at_a_high_rate_decodes_in_bounded_memory(bombs, name, mode):
    cases, small = bombs
    result = _decode_in_a_fresh_process(cases[name], small, mode)
    print(f"{name}, {mode}: peak RSS grew {result['growth_mb']:.0f} MB")
    assert result["outcome"] == "decoded"
    assert result["growth_mb"] < PEAK_LIMIT_MB, result


def test_more_channels_than_the_limit_is_refused_in_one_sentence_before_decoding(bombs):
    cases, small = bombs
    result = _decode_in_a_fresh_process(cases["wav 1,024 ch"], small, "mix")
    assert "claims 1,024 channels" in result["outcome"] and f"at most {MAX_CHANNELS} channels" in result["outcome"]
    assert "\n" not in result["outcome"] and result["growth_mb"] < 50
    with pytest.raises(UnsupportedFormatError, match="claims 1,024 channels"):
        decode.probe(cases["wav 1,024 ch"])


def test_the_limit_is_one_channel_past_what_decodes(tmp_path):
    at_limit = hostile_inputs.many_channels_wav(tmp_path / "at.wav", MAX_CHANNELS, rate=48_000)
    past = hostile_inputs.many_channels_wav(tmp_path / "past.wav", MAX_CHANNELS + 1, rate=48_000)
    assert decode.probe(at_limit).channels == MAX_CHANNELS
    with pytest.raises(UnsupportedFormatError, match=f"claims {MAX_CHANNELS + 1} channels"):
        decode.stream(past)


def test_indexing_the_bombs_keeps_the_decoder_process_bounded_and_records_each(bombs, tmp_path):
    """The whole ``index`` path: the decoding child's peak RSS (RUSAGE_CHILDREN) stays bounded."""
    cases, _ = bombs
    drop = tmp_path / "drop"
    drop.mkdir()
    for name in ("flac 8 ch at 655 kHz", "wav 16 ch at 768 kHz", "wav 1,024 ch"):
        os.symlink(cases[name], drop / cases[name].name)
    script = """
import json, resource, sys
from pathlib import Path
from indexer import Archive
from tests.fakes import FakeEncoder
with Archive.open(Path(sys.argv[2]), encoder=FakeEncoder(), create=True) as archive:
    report = archive.index([Path(sys.argv[1])])
print(json.dumps({"indexed": report.indexed, "failed": [f.reason for f in report.failed],
                  "child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""
    done = subprocess.run([sys.executable, "-c", script, str(drop), str(tmp_path / "arch")], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"index over the bombs: the decoding child peaked at {result['child_mb']:.0f} MB")
    assert result["indexed"] == 2 and len(result["failed"]) == 1 and "1,024 channels" in result["failed"][0]
    assert result["child_mb"] < 200 + PEAK_LIMIT_MB  # its imports (torch-free) take about 150 MB


@pytest.mark.parametrize("rate, channels, streams", [(768_000, 16, 1), (768_000, 64, 64), (1_000, 64, 64), (48_000, 2, 1),
                                                     (8_000, 1, 1)])
def test_a_block_holds_at_most_max_block_samples_before_and_after_resampling(rate, channels, streams):
    info = AudioInfo(Path("x.wav"), "WAV", "soundfile", rate, channels, 3600.0)
    frames = block_frames(info, DecodeOptions(), streams)
    assert 1 <= frames <= DecodeOptions().block_s * rate
    assert frames * channels <= MAX_BLOCK_SAMPLES
    assert frames * 48_000 / rate * streams <= MAX_BLOCK_SAMPLES + 48_000 / rate * streams


def test_thirty_second_blocks_of_ordinary_audio_are_unchanged():
    info = AudioInfo(Path("x.wav"), "WAV", "soundfile", 48_000, 2, 3600.0)
    assert block_frames(info, DecodeOptions(), 1) == 30 * 48_000


def test_the_value_check_makes_no_copy_of_a_block():
    chunk = np.random.default_rng(0).uniform(-1, 1, (MAX_BLOCK_SAMPLES // 16, 16)).astype(np.float32)
    info = AudioInfo(Path("x.wav"), "WAV", "soundfile", 48_000, 16, 0.0)
    tracemalloc.start()
    try:
        check_values(info, chunk, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < chunk.nbytes / 8, f"{peak / 1e6:.1f} MB for a {chunk.nbytes / 1e6:.0f} MB block"


def test_a_bad_sample_is_still_found_where_it_is():
    rate = 48_000
    chunk = np.zeros((MAX_BLOCK_SAMPLES // 4, 4), np.float32)
    chunk[3 * rate + 5, 2] = np.inf
    chunk[4 * rate, 0] = np.nan
    info = AudioInfo(Path("x.wav"), "WAV", "soundfile", rate, 4, 0.0)
    with pytest.raises(InvalidSamplesError, match=r"a sample at 13\.00 s is infinite"):
        check_values(info, chunk, 10 * rate)
    chunk[3 * rate + 5, 2] = -1e30
    with pytest.raises(InvalidSamplesError, match=r"at 3\.00 s is -1e\+30"):
        check_values(info, chunk, 0)
