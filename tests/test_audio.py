"""Decoding: the shared format zoo, streaming equivalence and bounded memory, channels, bad input."""

from __future__ import annotations

import csv
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from indexer.audio.decode import AudioInfo, load, probe, stream
from indexer.config import SAMPLE_RATE, DecodeOptions, RawPcmFormat
from indexer.errors import (
    AudioError,
    AudioTooLongError,
    DecodeError,
    EmptyAudioError,
    UnsupportedFormatError,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "audio"
ZOO = SHARED / "formats"
SAMPLES = ROOT / "data" / "samples"

# --- the format zoo -------------------------------------------------------------------------------

PYDUB_RAW = RawPcmFormat(sample_rate=32_000, channels=2, sample_format="s16le")
"""pydub's tests read test1.raw as 32 kHz stereo s16le: the same PCM as test1.wav (whose data
chunk is exactly the raw file's 1,281,212 bytes)."""

TRUNCATED_FOR_FFMPEG_TOO = {
    # The manifest only records libsndfile's verdict on these; FFmpeg opens them but finds no audio.
    "tinytag__alac_file.m4a": "20 kB cut from a 166 s ALAC file (ffmpeg: 'partial file')",
    "tinytag__test.m4a": "61 kB cut from a 315 s AAC file (ffmpeg: 'partial file')",
    "tinytag__test2.wma": "ASF header says 543,967 bytes / 86 s; the file holds 5,800 bytes",
}

FFMPEG_ONLY_DURATIONS = {
    # Files libsndfile cannot read (no duration in the manifest): duration measured with
    # `ffmpeg -i FILE -f null -` (decoded samples / rate).
    "pydub__bach.ogg": 3.030,
    "pydub__creative_common.mp4": 2.261,
    "pydub__format_test.m4a": 9.659,
    "pydub__test5.webm": 1.480,
    "pydub__wrong_extension.aac": 9.659,
    "tinytag__24bit_pcm_to_als.mp4": 0.100,
    "tinytag__bitrate_present.spx": 1.040,
}


def _zoo_rows() -> list[dict[str, str]]:
    manifest = SHARED / "MANIFEST.csv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row["path"].startswith("formats/")]


def _expectation(row: dict[str, str]) -> str:
    name, notes = Path(row["path"]).name, row["notes"]
    if "headerless raw PCM" in notes:
        return "raw"
    if name in TRUNCATED_FOR_FFMPEG_TOO or any(k in notes for k in ("truncated", "FAILED", "STREAMINFO only")):
        return "broken"
    if row["duration_s"] or name in FFMPEG_ONLY_DURATIONS:
        return "decodes"
    return "unclassified"


ZOO_ROWS = _zoo_rows()
ZOO_IDS = [Path(r["path"]).name for r in ZOO_ROWS]
needs_zoo = pytest.mark.skipif(not ZOO_ROWS, reason="../shared/audio/formats is not present")


def _decode_all(path: Path, opts: DecodeOptions = DecodeOptions()) -> tuple[AudioInfo, np.ndarray]:
    info, blocks = stream(path, opts)
    return info, np.concatenate(list(blocks), axis=1)


@needs_zoo
@pytest.mark.parametrize("row", ZOO_ROWS, ids=ZOO_IDS)
def test_zoo_file_meets_manifest(row: dict[str, str]) -> None:
    path = SHARED / row["path"]
    kind = _expectation(row)
    assert kind != "unclassified", f"{path.name}: new zoo file; add an expectation to this test"
    if kind == "raw":
        with pytest.raises(UnsupportedFormatError, match="--raw-rate"):
            stream(path)
        return
    if kind == "broken":
        with pytest.raises(DecodeError, match=path.name):
            _decode_all(path)
        return
    info, x = _decode_all(path)
    assert x.dtype == np.float32 and x.ndim == 2 and x.shape[0] == 1 and x.shape[1] > 0
    assert np.isfinite(x).all()
    expected = float(row["duration_s"]) if row["duration_s"] else FFMPEG_ONLY_DURATIONS[path.name]
    got = x.shape[1] / SAMPLE_RATE
    assert abs(got - expected) <= max(0.05, 0.02 * expected), f"decoded {got:.3f} s, expected {expected:.3f} s"
    if row["sample_rate"]:
        assert (info.sample_rate, info.channels) == (int(row["sample_rate"]), int(row["channels"]))
        assert info.decoder == "soundfile"
    else:
        assert info.decoder == "av"


@needs_zoo
def test_zoo_raw_pcm_decodes_with_its_parameters() -> None:
    _, raw = _decode_all(ZOO / "pydub__test1.raw", DecodeOptions(raw=PYDUB_RAW, channels="split"))
    info, wav = _decode_all(ZOO / "pydub__test1.wav", DecodeOptions(channels="split"))
    assert raw.shape == wav.shape and abs(raw.shape[1] - info.duration_s * SAMPLE_RATE) <= 1
    np.testing.assert_allclose(raw, wav, atol=1e-6)


@needs_zoo
def test_zoo_non_subset_flac_survives_piecewise_reads() -> None:
    """libsndfile cannot read this valid FLAC in pieces smaller than its 4096-frame block
    ('psf_fseek() failed'); the first-block check hands it to FFmpeg instead."""
    path = ZOO / "claxon__non_subset.flac"
    info, whole = _decode_all(path, DecodeOptions(channels="split"))
    assert info.decoder == "soundfile"
    info, pieces = _decode_all(path, DecodeOptions(channels="split", block_s=0.005))
    assert info.decoder == "av" and pieces.shape == whole.shape
    np.testing.assert_array_equal(pieces, whole)
    info, part = load(path, DecodeOptions(channels="split"), 0.02, 0.06)  # FFmpeg cannot seek it either
    assert info.decoder == "av" and part.shape == (2, 1920)
    np.testing.assert_allclose(part[:, 480:-480], whole[:, 960 + 480 : 2880 - 480], atol=1e-3)


@needs_zoo
def test_zoo_counts() -> None:
    kinds = [_expectation(r) for r in ZOO_ROWS]
    assert kinds.count("unclassified") == 0
    assert kinds.count("decodes") >= 45


# --- generated files ------------------------------------------------------------------------------


def _sine(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * rate))) / rate)).astype(np.float32)


def _write_av(path: Path, x: np.ndarray, rate: int, codec: str) -> Path:
    """Encode (n, ch) float32 with FFmpeg: containers libsndfile cannot read (m4a, mka)."""
    layout = "mono" if x.shape[1] == 1 else "stereo"
    with av.open(str(path), "w") as c:
        st = c.add_stream(codec, rate=rate, layout=layout)
        fmt = st.codec_context.codec.audio_formats[0].name
        for i in range(0, x.shape[0], 1024):
            blk = x[i : i + 1024]
            data = (np.clip(blk, -1, 1) * 32767).astype(np.int16) if fmt.startswith("s16") else blk
            data = np.ascontiguousarray(data.T) if fmt.endswith("p") else data.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for packet in st.encode(frame):
                c.mux(packet)
        for packet in st.encode(None):
            c.mux(packet)
    return path


@pytest.fixture()
def stereo_wav(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """12 s at 44.1 kHz: 440 Hz on the left, 1 kHz at a different level on the right."""
    x = np.stack([_sine(440, 12, 44_100, 0.5), _sine(1000, 12, 44_100, 0.25)], axis=1)
    sf.write(tmp_path / "stereo.wav", x, 44_100, subtype="FLOAT")
    return tmp_path / "stereo.wav", x


def test_streamed_blocks_are_bounded_and_equal_one_shot(stereo_wav) -> None:
    path, x = stereo_wav
    info, blocks = stream(path, DecodeOptions(block_s=1.0, channels="split"))
    blocks = list(blocks)
    assert (info.sample_rate, info.channels, info.decoder, info.format) == (44_100, 2, "soundfile", "WAV FLOAT")
    assert len(blocks) >= 12
    assert max(b.shape[1] for b in blocks) <= 1.1 * SAMPLE_RATE
    assert all(b.dtype == np.float32 and b.shape[0] == 2 for b in blocks)
    streamed = np.concatenate(blocks, axis=1)
    one_shot = soxr.resample(x, 44_100, SAMPLE_RATE, "HQ").T
    assert streamed.shape == one_shot.shape
    np.testing.assert_allclose(streamed, one_shot, atol=1e-5)


def test_block_size_does_not_change_output(stereo_wav) -> None:
    path, _ = stereo_wav
    _, small = _decode_all(path, DecodeOptions(block_s=0.37))
    _, large = _decode_all(path, DecodeOptions(block_s=30.0))
    assert small.shape == large.shape
    np.testing.assert_allclose(small, large, atol=1e-6)


def test_split_and_mix_channels(stereo_wav) -> None:
    path, x = stereo_wav
    _, split = _decode_all(path, DecodeOptions(channels="split"))
    _, mix = _decode_all(path, DecodeOptions(channels="mix"))
    assert split.shape[0] == 2 and mix.shape[0] == 1
    left, right = (soxr.resample(x[:, c], 44_100, SAMPLE_RATE, "HQ") for c in (0, 1))
    np.testing.assert_allclose(split[0], left, atol=1e-5)
    np.testing.assert_allclose(split[1], right, atol=1e-5)
    np.testing.assert_allclose(mix[0], (left + right) / 2, atol=1e-5)
    # the channels really differ: left is louder and at another pitch
    assert np.sqrt(np.mean(split[0] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert np.sqrt(np.mean(split[1] ** 2)) == pytest.approx(0.25 / np.sqrt(2), rel=1e-3)


def _long_file(tmp_path: Path, kind: str) -> tuple[Path, int]:
    if kind == "flac":  # 20 minutes through libsndfile, written a minute at a time
        path, minute = tmp_path / "long.flac", _sine(300, 60, 8_000, 0.3)
        with sf.SoundFile(path, "w", 8_000, 1, subtype="PCM_16") as f:
            for _ in range(20):
                f.write(minute)
        return path, 20 * 60
    return _write_av(tmp_path / "long.mka", _sine(300, 240, 16_000, 0.3)[:, None], 16_000, "pcm_s16le"), 240


@pytest.mark.parametrize("kind, decoder", [("flac", "soundfile"), ("mka", "av")])
def test_long_recording_streams_in_bounded_memory(tmp_path: Path, kind: str, decoder: str) -> None:
    path, seconds = _long_file(tmp_path, kind)
    full_bytes = seconds * SAMPLE_RATE * 4
    tracemalloc.start()
    try:
        info, blocks = stream(path, DecodeOptions(block_s=5.0))
        n = sum(b.shape[1] for b in blocks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.decoder == decoder and info.duration_s == pytest.approx(seconds)
    assert n == seconds * SAMPLE_RATE
    assert peak < full_bytes / 10, f"peak {peak / 1e6:.1f} MB for a {full_bytes / 1e6:.0f} MB recording"


def test_m4a_through_ffmpeg_and_seeking_load(tmp_path: Path) -> None:
    x = np.stack([_sine(440, 6, 44_100), _sine(1000, 6, 44_100, 0.3)], axis=1)
    path = _write_av(tmp_path / "clip.m4a", x, 44_100, "aac")
    info, full = load(path)
    assert (info.decoder, info.format, info.channels) == ("av", "M4A/aac", 2)
    assert abs(full.shape[1] / SAMPLE_RATE - 6.0) < 0.05
    _, part = load(path, start_s=2.0, end_s=3.0)
    assert part.shape == (1, SAMPLE_RATE)
    edge = 2_400  # the resampler's edge effects at the cut
    np.testing.assert_allclose(part[:, edge:-edge], full[:, 2 * SAMPLE_RATE + edge : 3 * SAMPLE_RATE - edge], atol=1e-3)


def test_load_range_matches_full_decode(stereo_wav) -> None:
    path, _ = stereo_wav
    _, full = load(path, DecodeOptions(channels="split"))
    _, part = load(path, DecodeOptions(channels="split"), start_s=4.5, end_s=7.0)
    assert part.shape == (2, int(2.5 * SAMPLE_RATE))
    edge = 2_400
    expected = full[:, int(4.5 * SAMPLE_RATE) + edge : 7 * SAMPLE_RATE - edge]
    np.testing.assert_allclose(part[:, edge:-edge], expected, atol=1e-4)
    _, tail = load(path, start_s=11.0)
    assert tail.shape[1] == pytest.approx(SAMPLE_RATE, abs=2)
    with pytest.raises(EmptyAudioError):
        load(path, start_s=20.0)
    with pytest.raises(ValueError):
        load(path, start_s=3.0, end_s=2.0)


def test_format_labels_and_raw_samples(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, _sine(440, 1, 16_000), 16_000, subtype="PCM_16")
    assert probe(wav).format == "WAV PCM_16"
    flac = tmp_path / "a.flac"
    sf.write(flac, _sine(440, 1, 16_000), 16_000)
    assert probe(flac).format == "FLAC"
    raw = tmp_path / "a.pcm"
    (_sine(440, 2, 16_000) * 32767).astype("<i2").tofile(raw)
    info, x = load(raw, DecodeOptions(raw=RawPcmFormat(16_000)))
    assert (info.format, info.decoder, info.duration_s) == ("RAW s16le", "raw", 2.0)
    np.testing.assert_allclose(x[0], soxr.resample(_sine(440, 2, 16_000), 16_000, SAMPLE_RATE, "HQ"), atol=1e-3)


@pytest.mark.parametrize("fmt", ["s16le", "s16be", "s24le", "s32le", "f32le", "u8"])
def test_raw_sample_formats(tmp_path: Path, fmt: str) -> None:
    x = _sine(1000, 0.5, 48_000, 0.5)
    as_int = lambda bits, dtype: np.round(x * (2 ** (bits - 1) - 1)).astype(dtype).tobytes()  # noqa: E731
    encode = {
        "s16le": lambda: as_int(16, "<i2"), "s16be": lambda: as_int(16, ">i2"), "s32le": lambda: as_int(32, "<i4"),
        "s24le": lambda: np.frombuffer(as_int(24, "<i4"), np.uint8).reshape(-1, 4)[:, :3].tobytes(),
        "u8": lambda: np.round(x * 127 + 128).astype(np.uint8).tobytes(), "f32le": lambda: x.astype("<f4").tobytes(),
    }
    path = tmp_path / f"x_{fmt}.raw"
    path.write_bytes(encode[fmt]())
    _, y = load(path, DecodeOptions(raw=RawPcmFormat(48_000, 1, fmt)))  # 48 kHz in: no resampling
    np.testing.assert_allclose(y[0], x, atol=1e-2 if fmt == "u8" else 1e-4)


def test_raw_parameters_apply_only_to_raw_files(tmp_path: Path) -> None:
    """A folder mixing .raw and real formats: --raw-rate must not turn a FLAC into noise."""
    x = _sine(440, 1.0, 16_000, 0.5)
    sf.write(tmp_path / "real.flac", x, 16_000)
    info, _ = load(tmp_path / "real.flac", DecodeOptions(raw=RawPcmFormat(8_000, 2, "u8")))
    assert (info.decoder, info.sample_rate, info.channels) == ("soundfile", 16_000, 1)


# --- bad input ------------------------------------------------------------------------------------


def test_raw_without_parameters_says_to_pass_the_rate(tmp_path: Path) -> None:
    path = tmp_path / "call.raw"
    path.write_bytes(b"\x00\x01" * 1000)
    with pytest.raises(UnsupportedFormatError, match=r"call\.raw.*sample rate.*--raw-rate"):
        probe(path)


def _patch_flac_total_samples(src: Path, dst: Path, total: int) -> Path:
    data = bytearray(src.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    field = int.from_bytes(data[18:26], "big")  # sample-rate/channels/bps/total-samples packed field
    field = (field & ~((1 << 36) - 1)) | total
    data[18:26] = field.to_bytes(8, "big")
    dst.write_bytes(bytes(data))
    return dst


def test_absurd_header_length_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "ok.flac"
    sf.write(src, _sine(440, 1, 8_000), 8_000)
    path = _patch_flac_total_samples(src, tmp_path / "huge.flac", (1 << 36) - 1)  # ~99 days at 8 kHz
    with pytest.raises(AudioTooLongError, match="huge.flac"):
        probe(path)
    with pytest.raises(AudioTooLongError):
        stream(path)
    with pytest.raises(AudioTooLongError):
        probe(src, DecodeOptions(max_duration_s=0.5))


def test_decoding_past_the_limit_stops(tmp_path: Path) -> None:
    src = tmp_path / "ok.flac"
    sf.write(src, _sine(440, 5, 8_000), 8_000)
    path = _patch_flac_total_samples(src, tmp_path / "unknown.flac", 0)  # FLAC's "length unknown"
    assert probe(path).duration_s == 0.0
    got = 0
    with pytest.raises(AudioTooLongError, match="unknown.flac"):
        _, blocks = stream(path, DecodeOptions(max_duration_s=2.0, block_s=0.5))
        for b in blocks:
            got += b.shape[1]
    assert got <= 2.0 * SAMPLE_RATE
    assert _decode_all(path)[1].shape[1] == 5 * SAMPLE_RATE  # no limit hit: all of it


def test_empty_inputs(tmp_path: Path) -> None:
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="zero.wav"):
        probe(zero)
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros(0, np.float32), 16_000)
    with pytest.raises(EmptyAudioError, match="header_only.wav"):
        stream(header_only)


@pytest.mark.parametrize("name", ["noise.wav", "noise.mp3", "noise.flac"])
def test_garbage_bytes_are_unsupported(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(UnsupportedFormatError, match=name):
        _decode_all(path)


def test_text_renamed_m4a_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "notes.m4a"
    path.write_text("minutes of the meeting\n" * 200)
    with pytest.raises(UnsupportedFormatError, match="notes.m4a"):
        probe(path)


def test_truncated_header_is_a_decode_error(tmp_path: Path) -> None:
    wav = tmp_path / "t.wav"
    sf.write(wav, _sine(440, 1, 16_000), 16_000)
    cut_header = tmp_path / "cut_header.wav"
    cut_header.write_bytes(wav.read_bytes()[:30])  # RIFF magic, no fmt/data chunks
    with pytest.raises(DecodeError, match="cut_header.wav"):
        probe(cut_header)


@pytest.mark.parametrize("damage", ["truncated", "zeroed_middle"])
def test_damage_mid_stream_is_a_decode_error(tmp_path: Path, damage: str) -> None:
    flac = tmp_path / "t.flac"
    noise = np.random.default_rng(3).standard_normal(16_000 * 10).astype(np.float32) * 0.2
    sf.write(flac, noise, 16_000)
    data = bytearray(flac.read_bytes())
    half = len(data) // 2
    if damage == "truncated":
        del data[half:]
    else:
        data[half : half + 2000] = bytes(2000)  # FFmpeg would skip this silently; we refuse
    path = tmp_path / f"{damage}.flac"
    path.write_bytes(bytes(data))
    got = 0
    with pytest.raises(DecodeError, match=f"{damage}.flac"):
        _, blocks = stream(path, DecodeOptions(block_s=0.5))
        for b in blocks:
            got += b.shape[1]
    assert 0 < got < 10 * SAMPLE_RATE  # it failed mid-stream, after good blocks


def test_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="nowhere.wav"):
        probe(tmp_path / "nowhere.wav")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")
def test_video_without_audio_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "silent_film.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=32x32:d=1", "-an", str(path)], check=True
    )
    with pytest.raises(UnsupportedFormatError, match="no audio stream"):
        probe(path)


# --- the project's own samples --------------------------------------------------------------------


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="run data/make_samples.py first")
def test_project_samples_decode() -> None:
    with (ROOT / "data" / "metadata.csv").open(newline="") as f:
        names = [row["file"] for row in csv.DictReader(f)]
    assert sorted(names) == sorted(p.name for p in SAMPLES.iterdir())
    for name in names:
        opts = DecodeOptions(raw=RawPcmFormat(16_000)) if name.endswith(".raw") else DecodeOptions()
        _, x = _decode_all(SAMPLES / name, opts)
        assert x.shape[1] > 0.5 * SAMPLE_RATE, name
    _, call = _decode_all(SAMPLES / "call_stereo_30s.opus", DecodeOptions(channels="split"))
    assert call.shape == (2, 30 * SAMPLE_RATE)
    active = np.abs(call).reshape(2, -1, SAMPLE_RATE // 10).max(axis=2) > 0.05  # 100 ms frames
    assert active[0].any() and active[1].any()
    assert (active[0] & active[1]).mean() < 0.05  # agent and customer take turns


# --- SILK v3: WeChat and QQ voice notes --------------------------------------------------------


def _silk_voice_note(path: Path, seconds: float = 2.0, frequency: float = 440.0, tencent: bool = True) -> Path:
    """A SILK v3 file encoded here (as WeChat records: 24 kHz mono), with Tencent's leading byte."""
    import io

    import pysilk

    t = np.arange(int(24_000 * seconds)) / 24_000
    pcm = (0.3 * np.sin(2 * np.pi * frequency * t) * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    pysilk.encode(io.BytesIO(pcm), out, 24_000, 24_000, tencent=tencent)
    path.write_bytes(out.getvalue())
    return path


@pytest.mark.parametrize(("name", "tencent"), [("note.slk", True), ("note.silk", False), ("wechat_voice.amr", True)])
def test_silk_voice_notes_decode_natively(tmp_path, name, tencent):
    path = _silk_voice_note(tmp_path / name, tencent=tencent)
    assert path.read_bytes()[: 1 + tencent] == (b"\x02#" if tencent else b"#")
    info = probe(path)
    assert (info.format, info.decoder, info.sample_rate, info.channels) == ("SILK v3", "silk", 24_000, 1)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    _, samples = load(path)
    assert samples.shape[1] == pytest.approx(2.0 * SAMPLE_RATE, abs=0.05 * SAMPLE_RATE)
    spectrum = np.abs(np.fft.rfft(samples[0, SAMPLE_RATE // 2 : SAMPLE_RATE // 2 + SAMPLE_RATE]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # one second of the 440 Hz tone, 1 Hz bins


def test_a_broken_silk_file_is_a_decode_error(tmp_path):
    from indexer.errors import DecodeError

    good = _silk_voice_note(tmp_path / "good.slk").read_bytes()
    (tmp_path / "cut.slk").write_bytes(good[:12] + b"\xff" * 40)
    with pytest.raises(DecodeError, match="looks like SILK v3 but cannot be decoded"):
        load(tmp_path / "cut.slk")
