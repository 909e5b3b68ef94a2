"""The three decoders, each yielding (n, channels) float32 chunks at the file's own rate from a
given frame: libsndfile (WAV/FLAC/Ogg/Opus/MP3/AIFF...), FFmpeg through PyAV (everything else),
and a reader for headerless raw PCM whose parameters the caller gives. Also the signatures by
which a file claims a format, so a broken file of a known kind is told from a foreign one."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import soundfile as sf

from indexer.config import RawPcmFormat
from indexer.errors import AudioError, DecodeError, UnsupportedFormatError

_UNKNOWN_FRAMES = 2**62
"""libsndfile reports SF_COUNT_MAX when it cannot know the length: that means 'unknown', not 'huge'."""

_MAGIC = (
    (0, b"RIFF", "WAV"), (0, b"RF64", "WAV"), (0, b"FORM", "AIFF"), (0, b"fLaC", "FLAC"), (0, b"OggS", "Ogg"),
    (0, b"ID3", "MP3"), (0, b"\x1aE\xdf\xa3", "Matroska/WebM"), (0, b"0&\xb2u\x8ef\xcf\x11", "ASF/WMA"),
    (0, b"caff", "CAF"), (0, b".snd", "AU"), (0, b"#!AMR", "AMR"), (4, b"ftyp", "MP4/M4A"),
)
"""Signatures by which a file *claims* an audio format: unreadable + claimed = DecodeError, not
UnsupportedFormatError (a broken file of a known kind, rather than a foreign one)."""

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


class Source:
    info: AudioInfo

    def chunks(self, start: int, stop: int | None, block: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _fail(self, frames_done: int, err: BaseException) -> DecodeError:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[-1][-160:]
        at = frames_done / self.info.sample_rate
        return DecodeError(f"{self.info.path}: decoding failed at {at:.2f} s ({reason}).")


class SfSource(Source):
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


class AvSource(Source):
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
            check_magic(path, c.format.name)
            label = _av_format(path, c.format.name, cc.name)
            self.info = AudioInfo(path, label, "av", rate, channels, max(duration, 0.0))

    def chunks(self, start: int, stop: int | None, block: int) -> Iterator[np.ndarray]:
        if start > 0:
            seeked = self._decode(start, stop, block, seek=True)
            try:
                first = next(seeked, None)
            except SeekMissed:
                pass
            else:
                if first is not None:
                    yield first
                    yield from seeked
                return
        yield from self._decode(start, stop, block, seek=False)

    def _decode(self, start: int, stop: int | None, block: int, seek: bool) -> Iterator[np.ndarray]:
        """Without ``seek`` the position is counted from the first sample; with it, read from pts
        after a backward seek (a landing past ``start`` means imprecise seeking: SeekMissed)."""
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
                        raise SeekMissed from None
                for frame in c.decode(st):
                    if seek:
                        tb = frame.time_base
                        if frame.pts is None or tb is None or (pos := round((frame.pts - origin) * tb * rate)) > start:
                            raise SeekMissed
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
        except (AudioError, SeekMissed):
            raise
        except Exception as e:
            raise self._fail(pos, e) from None
        if have:
            yield np.concatenate(pending, axis=0)


class SeekMissed(Exception):
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


class RawSource(Source):
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


SILK_RATE = 24_000
"""WeChat and QQ record their SILK v3 voice notes at 24 kHz; that is the rate they decode to."""
SILK_MAX_BYTES = 64 << 20
"""About six hours of speech at SILK's 24 kbit/s: far past any voice note, and a cap on the work."""
_SILK_MAGIC = b"#!SILK_V3"


def is_silk(path: Path) -> bool:
    """SILK v3 by its signature, with or without Tencent's leading 0x02 byte (the extension may be
    .slk, .silk or even .amr: WeChat saves them under several names)."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_SILK_MAGIC) + 1)
    except OSError:
        return False
    return head.startswith(_SILK_MAGIC) or head[1:].startswith(_SILK_MAGIC)


class SilkSource(Source):
    """SILK v3 through ``silk-python``: decoded once into a spooled temp file (memory stays small),
    then read in blocks like raw 16-bit PCM."""

    def __init__(self, path: Path, size: int) -> None:
        if size > SILK_MAX_BYTES:
            raise UnsupportedFormatError(f"{path}: a {size / 2**20:.0f} MB SILK file is far longer than any voice note.")
        try:
            import pysilk
        except ImportError:
            raise UnsupportedFormatError(
                f"{path}: SILK v3 (a WeChat/QQ voice note) needs the silk-python package: pip install silk-python."
            ) from None
        self._pcm = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        try:
            with path.open("rb") as f:
                pysilk.decode(f, self._pcm, SILK_RATE)
        except Exception as e:  # noqa: BLE001 - the codec reports corruption as its own error type
            self._pcm.close()
            raise DecodeError(f"{path}: looks like SILK v3 but cannot be decoded ({e}).") from None
        frames = self._pcm.tell() // 2
        self._pcm.seek(0)
        self.info = AudioInfo(path, "SILK v3", "silk", SILK_RATE, 1, frames / SILK_RATE)

    def chunks(self, start: int, stop: int | None, block: int) -> Iterator[np.ndarray]:
        done = start
        self._pcm.seek(start * 2)
        while stop is None or done < stop:
            buf = self._pcm.read((block if stop is None else min(block, stop - done)) * 2)
            usable = len(buf) - len(buf) % 2
            if usable == 0:
                return
            done += usable // 2
            yield _raw_to_float(buf[:usable], "s16le").reshape(-1, 1)


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


def check_magic(path: Path, container: str) -> None:
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


def open_av(path: Path) -> AvSource:
    try:
        return AvSource(path)
    except AudioError:
        raise
    except Exception:
        claimed = sniff(path)
        if claimed:
            msg = f"{path}: looks like {claimed} but neither decoder can read it (truncated or corrupt)."
            raise DecodeError(msg) from None
        raise UnsupportedFormatError(f"{path}: not an audio format libsndfile or FFmpeg recognises.") from None


def sniff(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return None
    return next((name for at, magic, name in _MAGIC if head[at : at + len(magic)] == magic), None)
