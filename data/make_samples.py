"""Regenerate soundtrace's own sample recordings into data/samples/ (and data/metadata.csv).

Everything here is synthesised (numpy, seeded) or spoken by espeak-ng, so the files carry no
third-party rights: the project releases them under CC0. Run from anywhere:

    python data/make_samples.py            # writes only what is missing
    python data/make_samples.py --force    # rewrites everything

Without espeak-ng the speech files are skipped (with a message) when they already exist.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "samples"
SEED = 20240501
SPEECH_RATE = 16_000  # wideband telephony; the indexer resamples to 48 kHz anyway

AGENT_VOICE = ("en-us+f3", 150, 50, 100)  # voice, words/min, pitch, amplitude
CUSTOMER_VOICE = ("en-gb+m3", 165, 40, 110)
ANGRY_VOICE = ("en-gb+m3", 195, 75, 190)

CALL_TURNS: tuple[tuple[str, tuple[str, int, int, int], str], ...] = (
    ("agent", AGENT_VOICE, "Thank you for calling, how can I help you?"),
    ("customer", CUSTOMER_VOICE, "I ordered a washing machine two weeks ago and it still has not arrived."),
    ("agent", AGENT_VOICE, "I am sorry to hear that. Let me check your order."),
    ("customer", ANGRY_VOICE, "This is the third time I am calling! This is completely unacceptable!"),
    ("agent", AGENT_VOICE, "I understand. I will send a replacement today."),
    ("customer", CUSTOMER_VOICE, "Fine. I want a refund if it is late again."),
)

# name -> (agent, site, date) for metadata.csv; every file the script writes appears here.
METADATA = {
    "tone_440hz_3s.flac": ("", "lab", "2024-05-01"),
    "tone_1khz_25s.opus": ("", "lab", "2024-05-01"),
    "beep_880hz_0.6s.flac": ("", "lab", "2024-05-01"),
    "tone_440hz_2s_16k_s16le_mono.raw": ("", "lab", "2024-05-01"),
    "white_noise_5s.opus": ("", "lab", "2024-05-02"),
    "pink_noise_5s.opus": ("", "lab", "2024-05-02"),
    "hold_music_12s.opus": ("", "leeds", "2024-05-03"),
    "silence_10s.flac": ("dana", "leeds", "2024-05-03"),
    "call_stereo_30s.opus": ("alice", "leeds", "2024-05-06"),
    "greeting_polite.opus": ("alice", "leeds", "2024-05-07"),
    "complaint_angry.opus": ("bob", "porto", "2024-05-07"),
    "clipped_speech.flac": ("bob", "porto", "2024-05-08"),
}
SPEECH_FILES = {"call_stereo_30s.opus", "greeting_polite.opus", "complaint_angry.opus", "clipped_speech.flac"}


# --- synthesis ----------------------------------------------------------------------------------


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def white_noise(seconds: float, rate: int, rng: np.random.Generator, amp: float = 0.1) -> np.ndarray:
    return (amp * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def pink_noise(seconds: float, rate: int, rng: np.random.Generator, amp: float = 0.1) -> np.ndarray:
    """1/f power: shape white noise's spectrum by 1/sqrt(f)."""
    n = int(seconds * rate)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return (amp * x / x.std()).astype(np.float32)


def hold_music(seconds: float, rate: int) -> np.ndarray:
    """A looping arpeggio of soft organ-like notes: the classic on-hold jingle."""
    notes = [261.63, 329.63, 392.00, 523.25, 392.00, 329.63, 293.66, 349.23, 440.00, 349.23]
    note_s = 0.4
    out = np.zeros(int(seconds * rate), np.float32)
    n = int(note_s * rate)
    env = np.minimum(1.0, np.arange(n) / (0.02 * rate)) * np.exp(-np.arange(n) / (0.25 * rate))
    t = np.arange(n) / rate
    for k, start in enumerate(range(0, len(out) - n, n)):
        f = notes[k % len(notes)]
        note = sum(a * np.sin(2 * np.pi * f * h * t) for h, a in ((1, 1.0), (2, 0.4), (3, 0.2)))
        out[start : start + n] += (0.25 * env * note).astype(np.float32)
    return out


def speak(text: str, voice: tuple[str, int, int, int], rate: int = SPEECH_RATE) -> np.ndarray:
    name, wpm, pitch, amp = voice
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(
            ["espeak-ng", "-v", name, "-s", str(wpm), "-p", str(pitch), "-a", str(amp), "-w", str(wav), text],
            check=True, capture_output=True,
        )
        x, sr = sf.read(wav, dtype="float32")
    return soxr.resample(x, sr, rate, "HQ").astype(np.float32)


def call(rng: np.random.Generator, seconds: float = 30.0, rate: int = SPEECH_RATE) -> np.ndarray:
    """Agent on the left channel, customer on the right, taking turns, over faint line hiss."""
    out = (3e-4 * rng.standard_normal((int(seconds * rate), 2))).astype(np.float32)
    t = int(0.5 * rate)
    for who, voice, text in CALL_TURNS:
        x = speak(text, voice, rate)[: max(0, out.shape[0] - t)]
        out[t : t + len(x), 0 if who == "agent" else 1] += x
        t += len(x) + int(0.6 * rate)
    return out


def clipped_speech(rate: int = SPEECH_RATE) -> np.ndarray:
    """An over-driven microphone: speech amplified 8x and hard-clipped at full scale."""
    x = speak("Hello? Hello? Can you hear me? The line is terrible, I can barely hear you.", CUSTOMER_VOICE, rate)
    return np.clip(8.0 * x, -1.0, 1.0).astype(np.float32)


# --- writing ------------------------------------------------------------------------------------


def write(path: Path, x: np.ndarray, rate: int) -> None:
    """Written in 1 s blocks: one huge ``sf.write`` to Ogg crashes libsndfile on long inputs."""
    if path.suffix == ".raw":
        (np.clip(x, -1, 1) * 32767).astype("<i2").tofile(path)
        return
    fmt, subtype = {".flac": ("FLAC", "PCM_16"), ".opus": ("OGG", "OPUS")}[path.suffix]
    channels = 1 if x.ndim == 1 else x.shape[1]
    tmp = path.with_suffix(path.suffix + ".part")
    with sf.SoundFile(tmp, "w", rate, channels, subtype=subtype, format=fmt) as f:
        for i in range(0, x.shape[0], rate):
            f.write(x[i : i + rate])
    if fmt == "OGG":
        _fix_ogg_serial(tmp)
    tmp.replace(path)


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _fix_ogg_serial(path: Path, serial: int = 0x50DA7ACE) -> None:
    """libsndfile picks a random Ogg stream serial; pin it (and redo each page's CRC) so that
    regenerating gives byte-identical files."""
    data = bytearray(path.read_bytes())
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"{path}: unexpected bytes at {pos} while fixing Ogg serial numbers")
        nseg = data[pos + 26]
        size = 27 + nseg + sum(data[pos + 27 : pos + 27 + nseg])
        data[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        data[pos + 22 : pos + 26] = b"\0\0\0\0"
        crc = 0
        for byte in data[pos : pos + size]:
            crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
        data[pos + 22 : pos + 26] = crc.to_bytes(4, "little")
        pos += size
    path.write_bytes(bytes(data))


def recipes(rng: np.random.Generator) -> dict[str, Callable[[], tuple[np.ndarray, int]]]:
    # Each noise recipe draws from its own child generator so that skipping one file (already
    # present) never changes another's content.
    white, pink, hiss = (np.random.default_rng(s) for s in rng.integers(0, 2**32, 3))
    return {
        "tone_440hz_3s.flac": lambda: (tone(440, 3, 16_000), 16_000),
        "tone_1khz_25s.opus": lambda: (tone(1000, 25, 16_000), 16_000),
        "beep_880hz_0.6s.flac": lambda: (tone(880, 0.6, 16_000), 16_000),
        "tone_440hz_2s_16k_s16le_mono.raw": lambda: (tone(440, 2, 16_000), 16_000),
        "white_noise_5s.opus": lambda: (white_noise(5, 48_000, white), 48_000),
        "pink_noise_5s.opus": lambda: (pink_noise(5, 48_000, pink), 48_000),
        "hold_music_12s.opus": lambda: (hold_music(12, 16_000), 16_000),
        "silence_10s.flac": lambda: (np.zeros(10 * 16_000, np.float32), 16_000),
        "call_stereo_30s.opus": lambda: (call(hiss), SPEECH_RATE),
        "greeting_polite.opus": lambda: (
            speak("Good morning, and thank you for calling. How may I help you today?", AGENT_VOICE), SPEECH_RATE),
        "complaint_angry.opus": lambda: (
            speak("This is ridiculous! I have been on hold for an hour and nobody fixes my problem!", ANGRY_VOICE),
            SPEECH_RATE),
        "clipped_speech.flac": lambda: (clipped_speech(), SPEECH_RATE),
    }


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--force", action="store_true", help="rewrite files that already exist")
    opts = args.parse_args(argv)
    SAMPLES.mkdir(parents=True, exist_ok=True)
    have_espeak = shutil.which("espeak-ng") is not None
    missing_speech = []
    for name, make in recipes(np.random.default_rng(SEED)).items():
        path = SAMPLES / name
        if name in SPEECH_FILES and not have_espeak:
            if path.exists():
                print(f"skip {name}: espeak-ng is not installed; keeping the existing file")
            else:
                missing_speech.append(name)
            continue
        if path.exists() and not opts.force:
            continue
        x, rate = make()
        write(path, x, rate)
        print(f"wrote {path.relative_to(HERE.parent)} ({path.stat().st_size / 1024:.0f} KiB)")
    with (HERE / "metadata.csv").open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "agent", "site", "date"])
        for name, (agent, site, date) in METADATA.items():
            w.writerow([name, agent, site, date])
    if missing_speech:
        missing = ", ".join(missing_speech)
        print(f"cannot make {missing}: install espeak-ng (apt-get install espeak-ng)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
