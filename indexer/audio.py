"""Decode any recording into 48 kHz float32 blocks, block by block, with typed errors.

Three decoders: libsndfile (``soundfile``) for what it reads (WAV/FLAC/Ogg/Opus/MP3/AIFF...),
FFmpeg (``av``) for everything else and as the fallback when libsndfile fails, and a tiny reader
for headerless raw PCM whose parameters the caller must give. Memory stays bounded by the block
length: every decoder reads ``opts.block_s`` at a time and ``soxr.ResampleStream`` carries the
resampler state across blocks, so streamed output equals one-shot resampling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import soundfile as sf
import soxr

from indexer.config import SAMPLE_RATE, DecodeOptions, RawPcmFormat
from indexer.errors import (
    AudioError,
    AudioTooLongError,
    DecodeError,
    EmptyAudioError,
    InvalidSamplesError,
    UnsupportedFormatError,
)

RESAMPLE_QUALITY = "HQ"
"""soxr quality: 'HQ' is transparent for 16-bit material and several times faster than 'VHQ'."""

_UNKNOWN_FRAMES = 2**62
"""libsndfile reports SF_COUNT_MAX when it cannot know the length: that means 'unknown', not 'huge'."""

_MAGIC = (
    (0, b"RIFF", "WAV"), (0, b"RF64", "WAV"), (0, b"FORM", "AIFF"), (0, b"fLaC", "FLAC"), (0, b"OggS", "Ogg"),
    (0, b"ID3", "MP3"), (0, b"\x1aE\xdf\xa3", "Matroska/WebM"), (0, b"0&\xb2u\x8ef\xcf\x11", "ASF/WMA"),
    (0, b"caff", "CAF"), (0, b".snd", "AU"), (0, b"#!AMR", "AMR"), (4, b"ftyp", "MP4/M4A"),
)
"""Signatures by which a file *claims* an audio format: unreadable + claimed = DecodeError, not
UnsupportedFormatError (a broken file of a known kind, rather than a foreign one)."""

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
"""Rates outside this range are a broken header, not a recording (a 288 KB WAV claiming 1 Hz would
otherwise decode to 40 hours at 48 kHz)."""

MAX_SAMPLE_MAGNITUDE = 1e12
"""|x| above this is not audio. Float files do exceed full scale (±1): some hold integer-scale
values, up to 2.2e9 for 32-bit PCM stored as float, and those still embed; 1e30 overflows the
model's power spectrum into NaN."""

_CONTAINER_MAGIC = {
    "wav": (b"RIFF", b"RF64", b"BW64"), "aiff": (b"FORM",), "afc": (b"FORM",), "au": (b".snd",), "caf": (b"caff",),
    "flac": (b"fLaC",), "ogg": (b"OggS",), "w64": (b"riff",), "amr": (b"#!AMR",),
}
"""FFmpeg containers with a fixed signature: opened without it (FFmpeg goes by the extension when
nothing else fits), random bytes would decode as noise."""

_RAW_WIDTH = {"s16le": 2, "s16be": 2, "s24le": 3, "s32le": 4, "f32le": 4, "u8": 1}
_AV_SCALE = {"u8": 1 / 128, "s16": 1 / 32768, "s32": 1 / 2**31, "s64": 1 / 2**63, "flt": 1.0, "dbl": 1.0}


@dataclass(frozen=True)
class AudioInfo:
    """What the header says. ``duration_s`` is 0.0 when the header does not know; decoding may
    find a slightly different length (MP3/AAC priming, Opus pre-skip)."""

    path: Path
    format: str
    decoder: str
    sample_rate: int
    channels: int
    duration_s: float


# --- public API ---------------------------------------------------------------------------------


def probe(path: str | Path, opts: DecodeOptions = DecodeOptions()) -> AudioInfo:
    """Read the header only; raises the same typed errors as decoding the whole file would at open."""
    info = _open(Path(path), opts).info
    _guard_length(info, opts, 0.0, None)
    return info


def stream(
    path: str | Path, opts: DecodeOptions = DecodeOptions(), start_s: float = 0.0, end_s: float | None = None
) -> tuple[AudioInfo, Iterator[np.ndarray]]:
    """(info, blocks of (streams, n) float32 at 48 kHz) for [start_s, end_s), seeking where the
    decoder can. The first block is decoded before this returns, so a file no decoder can read
    fails here rather than half-way through a pipeline; later failures (corruption mid-file,
    the length guard) are raised by the iterator."""
    if start_s < 0 or (end_s is not None and end_s <= start_s):
        raise ValueError(f"invalid range start={start_s} end={end_s}")
    src, chunks = _first_chunks(_open(Path(path), opts), start_s, end_s, opts)
    return src.info, _resampled(src.info, chunks, opts, int(round(start_s * src.info.sample_rate)))


def load(
    path: str | Path, opts: DecodeOptions = DecodeOptions(), start_s: float = 0.0, end_s: float | None = None
) -> tuple[AudioInfo, np.ndarray]:
    """The (streams, n) 48 kHz array for [start_s, end_s): for short ranges (a window, a preview);
    anything as long as a whole recording goes through ``stream``."""
    info, blocks = stream(path, opts, start_s, end_s)
    return info, np.concatenate(list(blocks), axis=1)


# --- opening ------------------------------------------------------------------------------------


def _open(path: Path, opts: DecodeOptions) -> _Source:
    if path.exists() and not path.is_file():
        raise AudioError(f"{path}: not a regular file (a directory, pipe or device).")
    try:
        with path.open("rb") as f:  # fail on permissions here, not as "unknown format" later
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise AudioError(f"{path}: cannot read the file ({e.strerror or e}).") from None
    if size == 0:
        raise EmptyAudioError(f"{path}: the file is empty (0 bytes).")
    if path.suffix.lower() in opts.raw_extensions and opts.raw is not None:
        src: _Source = _RawSource(path, opts.raw, size)
    elif path.suffix.lower() in opts.raw_extensions:
        raise UnsupportedFormatError(
            f"{path}: headerless raw PCM cannot say its own sample rate; pass it "
            "(--raw-rate, plus --raw-channels/--raw-format when not mono s16le)."
        )
    else:
        try:
            src = _SfSource(path)
        except Exception:
            src = _av_or_fail(path)
    _guard_rate(src.info)
    return src


def _guard_rate(info: AudioInfo) -> None:
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise DecodeError(
            f"{info.path}: the header claims a sample rate of {info.sample_rate:,} Hz; recordings are sampled "
            f"between {MIN_SAMPLE_RATE:,} and {MAX_SAMPLE_RATE:,} Hz (a broken header)."
        )


def _av_or_fail(path: Path) -> _AvSource:
    try:
        return _AvSource(path)
    except AudioError:
        raise
    except Exception:
        claimed = _sniff(path)
        if claimed:
            msg = f"{path}: looks like {claimed} but neither decoder can read it (truncated or corrupt)."
            raise DecodeError(msg) from None
        raise UnsupportedFormatError(f"{path}: not an audio format libsndfile or FFmpeg recognises.") from None


def _sniff(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return None
    return next((name for at, magic, name in _MAGIC if head[at : at + len(magic)] == magic), None)


def _guard_length(info: AudioInfo, opts: DecodeOptions, start_s: float, end_s: float | None) -> None:
    """Refuse before decoding when the header promises more than the limit in the range asked for."""
    span = min(info.duration_s, end_s if end_s is not None else info.duration_s) - start_s
    if span > opts.max_duration_s:
        raise AudioTooLongError(
            f"{info.path}: header claims {info.duration_s:,.0f} s, more than the "
            f"{opts.max_duration_s:,.0f} s limit (a broken header, or raise the limit)."
        )


def _first_chunks(
    src: _Source, start_s: float, end_s: float | None, opts: DecodeOptions
) -> tuple[_Source, Iterator[np.ndarray]]:
    """Decode the first chunk now; libsndfile failing on it (it cannot read some valid non-subset
    FLACs in pieces) falls back to FFmpeg from scratch. A failure after that is a DecodeError:
    resuming elsewhere would hide corruption and shift every later timestamp."""
    try:
        return src, _prepend(src, start_s, end_s, opts)
    except DecodeError:
        if not isinstance(src, _SfSource):
            raise
        fallback = _av_or_fail(src.info.path)
        _guard_rate(fallback.info)
        return fallback, _prepend(fallback, start_s, end_s, opts)


def _prepend(src: _Source, start_s: float, end_s: float | None, opts: DecodeOptions) -> Iterator[np.ndarray]:
    info, rate = src.info, src.info.sample_rate  # frames counted per decoder: FFmpeg may see another rate
    _guard_length(info, opts, start_s, end_s)
    start, stop = int(round(start_s * rate)), None if end_s is None else int(round(end_s * rate))
    chunks = src.chunks(start, stop, max(1, int(round(opts.block_s * rate))))
    first = next(chunks, None)
    if first is None:
        if start > 0:
            raise EmptyAudioError(f"{info.path}: no audio at or after {start_s:.2f} s.")
        if info.duration_s > 0:
            raise DecodeError(
                f"{info.path}: the header promises {info.duration_s:.3g} s but no audio could be decoded "
                "(truncated or corrupt)."
            )
        raise EmptyAudioError(f"{info.path}: the file holds no audio samples.")

    def chained() -> Iterator[np.ndarray]:
        try:
            yield first
            yield from chunks
        finally:
            chunks.close()

    return chained()


# --- resampling ---------------------------------------------------------------------------------


def _downmix(chunk: np.ndarray) -> np.ndarray:
    """(n, channels) -> (n, 1) mean; a matrix-vector product, several times faster than a strided mean."""
    if chunk.shape[1] == 1:
        return np.ascontiguousarray(chunk, dtype=np.float32)
    weights = np.full((chunk.shape[1], 1), 1.0 / chunk.shape[1], dtype=np.float32)
    return np.ascontiguousarray(chunk.astype(np.float32, copy=False) @ weights)


def _resampled(info: AudioInfo, chunks: Iterator[np.ndarray], opts: DecodeOptions, first_frame: int) -> Iterator[np.ndarray]:
    """(n, ch) chunks at the original rate, from ``first_frame`` on -> (streams, n) float32 blocks at 48 kHz."""
    mix = opts.channels == "mix"
    width = 1 if mix else info.channels
    resampler = None
    if info.sample_rate != SAMPLE_RATE:
        resampler = soxr.ResampleStream(info.sample_rate, SAMPLE_RATE, width, dtype="float32", quality=RESAMPLE_QUALITY)
    limit = opts.max_duration_s * info.sample_rate
    seen = produced = 0
    try:
        for chunk in chunks:
            if seen + chunk.shape[0] > limit:
                raise AudioTooLongError(_too_long(info, opts))
            _check_values(info, chunk, first_frame + seen)
            seen += chunk.shape[0]
            x = _downmix(chunk) if mix else np.ascontiguousarray(chunk)
            y = resampler.resample_chunk(x) if resampler is not None else x
            if y.shape[0]:
                produced += y.shape[0]
                yield np.ascontiguousarray(y.T)
        if resampler is not None:
            y = resampler.resample_chunk(np.zeros((0, width), np.float32), last=True)
            if y.shape[0]:
                produced += y.shape[0]
                yield np.ascontiguousarray(y.T)
    finally:
        chunks.close()  # type: ignore[attr-defined]
    if produced == 0:
        raise EmptyAudioError(f"{info.path}: too few samples to make even one at 48 kHz.")


def _too_long(info: AudioInfo, opts: DecodeOptions) -> str:
    return f"{info.path}: decoding passed the {opts.max_duration_s:,.0f} s limit; stopped."


def _check_values(info: AudioInfo, chunk: np.ndarray, frames_before: int) -> None:
    """Refuse NaN, infinities and absurd magnitudes before they reach resampling or the model."""
    if chunk.size == 0:
        return
    peak = float(np.max(np.abs(chunk)))
    if peak <= MAX_SAMPLE_MAGNITUDE:  # False for NaN too
        return
    bad = ~(np.abs(chunk) <= MAX_SAMPLE_MAGNITUDE)
    at = (frames_before + int(np.argmax(bad.any(axis=1)))) / info.sample_rate
    value = chunk[bad][0]
    what = "NaN" if np.isnan(value) else "infinite" if np.isinf(value) else f"{float(value):.3g}"
    raise InvalidSamplesError(
        f"{info.path}: a sample at {at:.2f} s is {what}, which no recording holds (full scale is ±1); "
        "the file is corrupt or not audio."
    )


# --- decoders: each yields (n, ch) float32 chunks at the original rate, from frame `start` --------


class _Source:
    info: AudioInfo

    def chunks(self, start: int, stop: int | None, block: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _fail(self, frames_done: int, err: BaseException) -> DecodeError:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[-1][-160:]
        at = frames_done / self.info.sample_rate
        return DecodeError(f"{self.info.path}: decoding failed at {at:.2f} s ({reason}).")


class _SfSource(_Source):
    def __init__(self, path: Path) -> None:
        i = sf.info(str(path))
        if i.samplerate <= 0 or i.channels <= 0:
            raise ValueError("libsndfile reported no sample rate or channels")
        if i.format == "RAW":  # a headerless .au/.snd read as 8 kHz u-law by convention: any bytes pass
            raise ValueError("libsndfile guessed headerless data")
        frames = i.frames if 0 <= i.frames < _UNKNOWN_FRAMES else 0
        self.info = AudioInfo(path, _sf_format(i.format, i.subtype), "soundfile", int(i.samplerate), int(i.channels),
                              frames / i.samplerate)

    def chunks(self, start: int, stop: int | None, block: int) -> Iterator[np.ndarray]:
        done = start
        try:
            with sf.SoundFile(str(self.info.path)) as f:
                if start:
                    f.seek(start)
                while stop is None or done < stop:
                    data = f.read(block if stop is None else min(block, stop - done), dtype="float32", always_2d=True)
                    if data.shape[0] == 0:
                        return
                    done += data.shape[0]
                    yield data
        except Exception as e:
            raise self._fail(done, e) from None


def _sf_format(fmt: str, subtype: str) -> str:
    if fmt == "FLAC":
        return "FLAC"
    if fmt == "MP3":
        return {"MPEG_LAYER_I": "MP1", "MPEG_LAYER_II": "MP2"}.get(subtype, "MP3")
    return f"{fmt} {subtype}"


class _AvSource(_Source):
    def __init__(self, path: Path) -> None:
        with av.open(str(path), metadata_errors="ignore") as c:
            if not c.streams.audio:
                raise UnsupportedFormatError(f"{path}: the container holds no audio stream.")
            st = c.streams.audio[0]
            cc = st.codec_context
            rate, channels = int(cc.sample_rate or 0), int(cc.layout.nb_channels if cc.layout else 0)
            if rate <= 0 or channels <= 0:
                raise ValueError("no sample rate or channel count")  # FFmpeg guessed from the extension
            if st.duration and st.time_base:
                duration = float(st.duration * st.time_base)
            else:
                duration = (c.duration or 0) / av.time_base
            _check_magic(path, c.format.name)
            label = _av_format(path, c.format.name, cc.name)
            self.info = AudioInfo(path, label, "av", rate, channels, max(duration, 0.0))

    def chunks(self, start: int, stop: int | None, block: int) -> Iterator[np.ndarray]:
        if start > 0:
            seeked = self._decode(start, stop, block, seek=True)
            try:
                first = next(seeked, None)
            except _SeekMissed:
                pass
            else:
                if first is not None:
                    yield first
                    yield from seeked
                return
        yield from self._decode(start, stop, block, seek=False)

    def _decode(self, start: int, stop: int | None, block: int, seek: bool) -> Iterator[np.ndarray]:
        """Without ``seek`` the position is counted from the first sample; with it, read from pts
        after a backward seek (a landing past ``start`` means imprecise seeking: _SeekMissed)."""
        rate, channels = self.info.sample_rate, self.info.channels
        pending: list[np.ndarray] = []
        have = pos = 0
        try:
            with av.open(str(self.info.path), metadata_errors="ignore") as c:
                st = c.streams.audio[0]
                origin = st.start_time or 0
                if seek:
                    try:
                        c.seek(int(Fraction(start, rate) / st.time_base) + origin, stream=st, backward=True)
                    except Exception:  # some demuxers cannot seek at all (FLAC without a seek table)
                        raise _SeekMissed from None
                for frame in c.decode(st):
                    if seek:
                        tb = frame.time_base
                        if frame.pts is None or tb is None or (pos := round((frame.pts - origin) * tb * rate)) > start:
                            raise _SeekMissed
                        seek = False
                    if frame.sample_rate != rate:
                        raise ValueError(f"sample rate changes mid-stream ({rate} -> {frame.sample_rate})")
                    x = _frame_array(frame)
                    if x.shape[1] != channels:
                        raise ValueError(f"channel count changes mid-stream ({channels} -> {x.shape[1]})")
                    lo, hi = max(start - pos, 0), x.shape[0] if stop is None else min(x.shape[0], stop - pos)
                    pos += x.shape[0]
                    if hi > lo:
                        pending.append(x[lo:hi])
                        have += hi - lo
                    if have >= block:
                        joined = np.concatenate(pending, axis=0)
                        cut = have - have % block
                        for i in range(0, cut, block):
                            yield joined[i : i + block]
                        pending, have = [joined[cut:]], have - cut
                    if stop is not None and pos >= stop:
                        break
        except (AudioError, _SeekMissed):
            raise
        except Exception as e:
            raise self._fail(pos, e) from None
        if have:
            yield np.concatenate(pending, axis=0)


def _check_magic(path: Path, container: str) -> None:
    expected = [magic for name in container.split(",") for magic in _CONTAINER_MAGIC.get(name, ())]
    if not expected:
        return
    with path.open("rb") as f:
        head = f.read(8)
    if not head.startswith(b"ID3") and not any(head.startswith(magic) for magic in expected):  # ID3: a tag first
        raise UnsupportedFormatError(
            f"{path}: FFmpeg would read it as {container.split(',')[0].upper()} by its name, but it lacks that "
            "format's signature (not an audio file, or a corrupt one)."
        )


class _SeekMissed(Exception):
    """The container could not seek precisely; decode from the start instead."""


def _frame_array(frame: av.AudioFrame) -> np.ndarray:
    """An FFmpeg frame as (n, ch) float32 in [-1, 1], whatever its sample format."""
    planar = frame.format.is_planar
    base = frame.format.name[:-1] if planar else frame.format.name
    if base not in _AV_SCALE:
        raise ValueError(f"unsupported sample format {frame.format.name}")
    a = frame.to_ndarray()
    a = a.T if planar else a.reshape(-1, frame.layout.nb_channels)
    if base == "u8":
        return (a.astype(np.float32) - 128.0) * np.float32(_AV_SCALE["u8"])
    return a.astype(np.float32) * np.float32(_AV_SCALE[base]) if _AV_SCALE[base] != 1.0 else a.astype(np.float32)


def _av_format(path: Path, container: str, codec: str) -> str:
    """'M4A/aac': the file's extension when FFmpeg's container names include it."""
    names = container.split(",")
    ext = path.suffix.lower().lstrip(".")
    label = ext if ext in names else "mp4" if "mp4" in names else names[0]
    return f"{label.upper()}/{codec}"


class _RawSource(_Source):
    def __init__(self, path: Path, raw: RawPcmFormat, size: int) -> None:
        if raw.sample_format not in _RAW_WIDTH:
            raise UnsupportedFormatError(f"{path}: unknown raw sample format {raw.sample_format!r}.")
        if raw.sample_rate <= 0 or raw.channels <= 0:
            raise UnsupportedFormatError(f"{path}: raw PCM needs a positive sample rate and channel count.")
        self.raw = raw
        self.frame_bytes = _RAW_WIDTH[raw.sample_format] * raw.channels
        frames = size // self.frame_bytes
        self.info = AudioInfo(path, f"RAW {raw.sample_format}", "raw", raw.sample_rate, raw.channels,
                              frames / raw.sample_rate)

    def chunks(self, start: int, stop: int | None, block: int) -> Iterator[np.ndarray]:
        done = start
        try:
            with self.info.path.open("rb") as f:
                f.seek(start * self.frame_bytes)
                while stop is None or done < stop:
                    buf = f.read((block if stop is None else min(block, stop - done)) * self.frame_bytes)
                    usable = len(buf) - len(buf) % self.frame_bytes  # a torn last frame is dropped
                    if usable == 0:
                        return
                    done += usable // self.frame_bytes
                    yield _raw_to_float(buf[:usable], self.raw.sample_format).reshape(-1, self.raw.channels)
        except Exception as e:
            raise self._fail(done, e) from None


def _raw_to_float(buf: bytes, fmt: str) -> np.ndarray:
    if fmt == "s24le":
        b = np.frombuffer(buf, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return (np.where(v >= 1 << 23, v - (1 << 24), v) * np.float32(1 / 2**23)).astype(np.float32)
    if fmt == "u8":
        return (np.frombuffer(buf, np.uint8).astype(np.float32) - 128.0) / 128.0
    dtype, scale = {"s16le": ("<i2", 1 / 32768), "s16be": (">i2", 1 / 32768),
                    "s32le": ("<i4", 1 / 2**31), "f32le": ("<f4", 1.0)}[fmt]
    return np.frombuffer(buf, dtype).astype(np.float32) * np.float32(scale)
