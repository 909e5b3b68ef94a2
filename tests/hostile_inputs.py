"""Crafted hostile inputs: every way a file, its name or its sample values can be wrong.

``build(folder)`` writes the corpus and returns one ``Case`` per entry. Indexing the folder must
end with every case recorded (indexed, or failed with a one-line reason) and the good files
beside them indexed; no case may abort the run. New kinds of trouble go here, so every later
change is tried against all of them.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from indexer.audio.sources import AUDIO_EXTENSIONS

RATE = 16_000
FAILED, INDEXED, RECORDED = "failed", "indexed", "recorded"
"""What a case must end as; RECORDED: either, as long as a failure says why (truncations that
leave whole frames decode, others do not, depending on the decoder)."""


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    expect: str


def good_audio(seconds: float = 3.0, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def wav_header(rate: int, channels: int, bits: int, data_bytes: int, fmt_tag: int = 1) -> bytes:
    """A canonical 44-byte RIFF/WAVE header with whatever values a hostile file claims."""
    block = max(1, channels * max(bits, 8) // 8)
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    riff_size = (36 + data_bytes) & 0xFFFFFFFF
    return b"RIFF" + struct.pack("<I", riff_size) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack(
        "<I", data_bytes & 0xFFFFFFFF
    )


def build(folder: Path, seed: int = 0) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases: list[Case] = []

    def add(name: str, rel: str, expect: str) -> Path:
        path = folder / rel
        cases.append(Case(name, path, expect))
        return path

    # random bytes under every extension soundtrace picks up (raw PCM without its rate fails too)
    for ext in sorted(AUDIO_EXTENSIONS):
        for size in (1, 700, 40_000):
            data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            add(f"random{size}{ext}", f"random/r{size}{ext}", FAILED).parent.mkdir(exist_ok=True)
            (folder / f"random/r{size}{ext}").write_bytes(data)
    add("empty.wav", "empty.wav", FAILED).write_bytes(b"")
    add("zeros.flac", "zeros.flac", FAILED).write_bytes(bytes(4096))

    # truncations of valid files at the header, inside it and mid-data
    samples = good_audio(4.0)
    for fmt, ext in (("WAV", ".wav"), ("FLAC", ".flac"), ("OGG", ".ogg")):
        whole = folder / f"whole{ext}.tmp"
        sf.write(whole, samples, RATE, format=fmt)
        blob = whole.read_bytes()
        whole.unlink()
        for cut in (12, 30, 44, len(blob) // 2, len(blob) - 3):
            expect = FAILED if cut <= 30 else RECORDED
            add(f"truncated{cut}{ext}", f"truncated/t{cut}{ext}", expect).parent.mkdir(exist_ok=True)
            (folder / f"truncated/t{cut}{ext}").write_bytes(blob[:cut])

    # headers that lie: absurd rates, channel counts, bit depths, sizes and codes
    pcm = (good_audio(2.0) * 32767).astype("<i2").tobytes()
    lies = {
        "rate1": wav_header(1, 1, 16, len(pcm)) + pcm,  # 64,000 samples at 1 Hz: 17 hours
        "rate0": wav_header(0, 1, 16, len(pcm)) + pcm,
        "rate_max": wav_header(0xFFFFFFFF, 1, 16, len(pcm)) + pcm,
        "channels0": wav_header(RATE, 0, 16, len(pcm)) + pcm,
        "channels_huge": wav_header(RATE, 65535, 16, len(pcm)) + pcm,
        "bits7": wav_header(RATE, 1, 7, len(pcm)) + pcm,
        "bits0": wav_header(RATE, 1, 0, len(pcm)) + pcm,
        "format_tag_unknown": wav_header(RATE, 1, 16, len(pcm), fmt_tag=0x1234) + pcm,
        "data_size_4gb": wav_header(RATE, 1, 16, 0xFFFFFFF0) + pcm,
        "data_size_0": wav_header(RATE, 1, 16, 0) + pcm,
        "no_fmt_chunk": b"RIFF" + struct.pack("<I", 4 + 8 + len(pcm)) + b"WAVEdata" + struct.pack("<I", len(pcm)) + pcm,
        "riff_only": b"RIFF\xff\xff\xff\xffWAVE",
    }
    for name, blob in lies.items():
        expect = RECORDED if name in ("data_size_4gb", "data_size_0", "bits7") else FAILED  # bits7: read as 8-bit
        add(f"header_{name}", f"headers/{name}.wav", expect).parent.mkdir(exist_ok=True)
        (folder / f"headers/{name}.wav").write_bytes(blob)

    # sample values no recording holds: NaN, infinities, absurd magnitudes
    (folder / "values").mkdir(exist_ok=True)
    for name, value in (("nan", np.nan), ("inf", np.inf), ("neg_inf", -np.inf), ("huge", 1e30)):
        one_bad = good_audio(3.0)
        one_bad[RATE] = value
        sf.write(add(f"one_{name}", f"values/one_{name}.wav", FAILED), one_bad, RATE, subtype="FLOAT")
        sf.write(add(f"all_{name}", f"values/all_{name}.wav", FAILED), np.full(RATE * 2, value, np.float32), RATE, subtype="FLOAT")
    sf.write(add("denormals", "values/denormals.wav", INDEXED), np.full(RATE * 2, 1e-42, np.float32), RATE, subtype="FLOAT")
    sf.write(add("full_scale_square", "values/square.wav", INDEXED), np.sign(good_audio(2.0)), RATE, subtype="FLOAT")

    # links that cannot be followed
    (folder / "links").mkdir(exist_ok=True)
    os.symlink("loop_b.wav", add("symlink_loop", "links/loop_a.wav", FAILED))
    os.symlink("loop_a.wav", add("symlink_loop_back", "links/loop_b.wav", FAILED))
    os.symlink("self.wav", add("symlink_self", "links/self.wav", FAILED))
    os.symlink("nowhere.wav", add("symlink_dangling", "links/dangling.wav", FAILED))

    # names that are hard to store, print or quote (valid audio inside)
    (folder / "names").mkdir(exist_ok=True)
    odd_names = [
        "quote's \"double\".wav", "semi;colon -- DROP TABLE recordings;.wav", "new\nline.wav", "tab\there.wav",
        "-leading-dash.wav", "back\\slash.wav", "percent %s %d {}.wav", "空格 中文 ✓.wav", "e\u0301-nfd.wav",
        "x" * 240 + ".wav", " leading and trailing space .wav", "$(touch pwned).wav", "markup [old] ]b[ [bold].wav",
        "escape \x1b[31mred\x1b[0m.wav", "bell \x07 and cr \r.wav",
    ]
    for name in odd_names:
        sf.write(add(f"name {name[:20]!r}", f"names/{name}", INDEXED), good_audio(2.0), RATE)
    bad_utf8 = add("name not utf-8", os.fsdecode(b"names/latin1-\xe9t\xe9-\xff.wav"), FAILED)
    sf.write(folder / "names" / "staging.wav", good_audio(2.0), RATE)  # libsndfile cannot open such a name
    os.rename(folder / "names" / "staging.wav", os.fsencode(bad_utf8))

    # things that are not regular files under audio names
    (folder / "special").mkdir(exist_ok=True)
    os.mkfifo(add("fifo", "special/pipe.wav", FAILED))
    add("markup in a failed name", "special/[bold]junk[red] \x1b[2J.wav", FAILED).write_bytes(b"not audio" * 50)
    (folder / "special" / "folder.wav").mkdir()
    sf.write(add("inside a folder named .wav", "special/folder.wav/inner.wav", INDEXED), good_audio(2.0), RATE)
    cases += decoding_and_naming_traps(folder)  # issue 20, items 8, 13 and 16 (at the end of this file)
    return cases


# --- inputs that take memory or the clock (issue 20, items 7 and 9-12) --------------------------
# Each was a few KB to a few MB of text that took gigabytes or minutes; the limits that now refuse
# them are documented in README.md and tested in tests/test_bounded_inputs.py.


def wide_metadata_csv(path: Path, columns: int = 20_000, rows: int = 1) -> Path:
    """A metadata CSV of ``columns`` columns (the key ``file`` among them) and a few short rows:
    169 KB at 20,000 columns took ``index --metadata`` to 22.9 GB (2,000: 0.59 GB)."""
    header = ",".join(["file"] + [f"c{i}" for i in range(columns - 1)])
    lines = [header] + [",".join([f"r{r}.wav"] + ["1"] * (columns - 1)) for r in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def nested_repeats_regex(length: int = 566) -> str:
    """Nested bounded repeats, ``((.{0,10}){0,10}){0,10}`` again and again: RE2 compiles each
    within its limits, but the program is too large for its DFA, so every row is matched by its
    NFA (≈ 55 ms per 100 characters): 566 characters took a search 254 s, 1,442 took 543 s."""
    unit = "((.{0,10}){0,10}){0,10}"
    body = unit * ((length - 1) // len(unit))
    return body + "a" * (length - 1 - len(body)) + "#"  # a sign no path holds: every row is searched to its end


HOSTILE_REGEX_FILTERS = (
    f"regexp_matches(path, '{nested_repeats_regex(566)}')",
    f"regexp_matches(path, '{nested_repeats_regex(1442)}')",
    f"path SIMILAR TO '{nested_repeats_regex(566)}'",
    f"path ~ '{nested_repeats_regex(300)}'",
    f"regexp_extract(path, '{nested_repeats_regex(300)}') = ''",
    "regexp_matches(path, '(.{0,10}){0,100}x')",  # one pattern, within RE2's own limits
    "regexp_matches(path, '" + ".{0,100}" * 12 + "x')",  # many repeats in a row
    "regexp_matches(path, '.{0,999}x')",  # one huge count
    "regexp_matches(path, '(.{0,10}){0,50}x') OR regexp_matches(path, '(.{0,10}){0,50}y')",  # several patterns
    "regexp_matches(path, '(.{0,10}' || '){0,100}x')",  # a pattern built from pieces
    "regexp_matches('.{0,10}', path)",  # a pattern read from the data
    "regexp_matches(path, lower('(.{0,10}){0,100}x'))",
)
"""``--where`` filters whose regular expressions cost minutes on a small archive: each is refused
in one sentence before it runs."""


LEFT_PARENS_LABEL = "(" * 60_000 + "x"
"""Each loop of the old normaliser peeled one "(" and copied the rest: 285 s in ``audit run``, and
``label mark`` silently marked the label "x"."""

HOSTILE_LABELS = (
    LEFT_PARENS_LABEL,
    "[" * 30_000 + "x" + "]" * 30_000,  # balanced: each peel scanned for the matching bracket
    "“" * 60_000 + "x",  # an opening quote never closed: the splitter searched for it from each one
    " " * 60_000 + "x but not y",  # whitespace before "but not" (a backtracking regex)
    ". " * 30_000 + "x",
    "x" * 60_000,
)
"""Label texts over the length limit that must be refused in one sentence, quickly."""


def alias_bomb_labelset(labels: int = 2_000, prompts: int = 2_000) -> str:
    """A label set of ``labels`` labels sharing one anchored list of ``prompts`` prompts: 74 KB of
    YAML that expanded to 4,002,000 prompts (44 s and 1.64 GB before any embedding)."""
    lines = ["name: alias bomb", "labels:", "  - name: l0", "    prompts: &p"]
    lines += [f"      - p{i}" for i in range(prompts)]
    lines += [f"  - {{name: l{i}, prompts: *p}}" for i in range(1, labels)]
    return "\n".join(lines) + "\n"


def big_marks_csv(path: Path, window_ids: list[int], rows: int = 1_000_000) -> Path:
    """``rows`` marks cycling over ``window_ids`` (4.9 MB at a million rows): one INSERT per row in
    one transaction ran past 10 minutes holding the catalog."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("window_id,positive\n")
        cycle = len(window_ids)
        f.writelines(f"{window_ids[i % cycle]},{i % 2}\n" for i in range(rows))
    return path


# --- damage done to an archive's files from outside (issue 20, items 1-6) ----------------------

DAMAGED_MANIFESTS = {
    "a list": b"[]",
    "an empty object": b"{}",
    "null": b"null",
    "dim as words": b'{"model_id": "m", "revision": "r", "dim": "sixteen", "window_s": 10, "hop_s": 5, "min_tail_s": 1}',
    "not utf-8": b'{"model_id": "\xe9\xff", "dim": 16}',
    "not json": b"{model_id: ",
    "negative dim": b'{"model_id": "m", "revision": "r", "dim": -1, "window_s": 10, "hop_s": 5, "min_tail_s": 1}',
    "unknown channels": b'{"model_id": "m", "revision": "r", "dim": 16, "window_s": 10, "hop_s": 5, "min_tail_s": 1,'
                        b' "channels": 7}',
    "precision as a number": b'{"model_id": "m", "revision": "r", "dim": 16, "window_s": 10, "hop_s": 5, "min_tail_s": 1,'
                             b' "precision": 16}',
    "unknown precision": b'{"model_id": "m", "revision": "r", "dim": 16, "window_s": 10, "hop_s": 5, "min_tail_s": 1,'
                         b' "precision": "int8"}',
    "batch size as words": b'{"model_id": "m", "revision": "r", "dim": 16, "window_s": 10, "hop_s": 5, "min_tail_s": 1,'
                           b' "batch_size": "eight"}',
}
"""manifest.json contents every command must name as damage in one sentence, never a traceback."""


# --- decoding that took memory by channels x rate; names and links that took each other's rows ---
# (issue 20, items 8, 13 and 16; tests/test_bounded_decoding.py and tests/test_hostile_names.py)

FLAC_BOMB_RATE, FLAC_BOMB_CHANNELS, FLAC_BOMB_SECONDS = 655_350, 8, 30
"""FLAC's highest rate and channel count: 30 s of silence is 170 KB on disk and, decoded 30 s at a
time, 629 MB per block (1.2 GB with the copy the value check took)."""


def flac_bomb(path: Path, seconds: int = FLAC_BOMB_SECONDS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", FLAC_BOMB_RATE, FLAC_BOMB_CHANNELS, subtype="PCM_16", format="FLAC") as fh:
        second = np.zeros((FLAC_BOMB_RATE, FLAC_BOMB_CHANNELS), np.int16)
        for _ in range(seconds):
            fh.write(second)
    return path


def many_channels_wav(path: Path, channels: int, rate: int = 768_000, claimed_s: float | None = None) -> Path:
    """A 4 KB WAV of ``channels`` channels at ``rate``; its header may claim ``claimed_s`` of audio."""
    body = (np.random.default_rng(channels).standard_normal(2048) * 3000).astype("<i2").tobytes()
    claimed = len(body) if claimed_s is None else int(claimed_s * rate) * channels * 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_header(rate, channels, 16, claimed) + body)
    return path


LITERAL_ESCAPES = "latin1-\\xe9t\\xe9-\\xff.wav"
"""A valid UTF-8 name spelling, backslashes and all, what the bytes latin1-<E9>t<E9>-<FF>.wav used
to be keyed as: the next run replaced this recording with that file's failure."""


def decoding_and_naming_traps(folder: Path) -> list[Case]:
    """Files ``build`` adds to the corpus: decoding bombs (a few KB that took gigabytes), a name
    that spells another file's escaped bytes (and a second non-UTF-8 name escaping to the same
    text), and a link into /proc that resolves to another file in every process."""
    cases = [
        Case("flac 8 ch at 655 kHz", flac_bomb(folder / "bombs" / "silence-8ch-655khz.flac"), INDEXED),
        Case("wav 16 ch at 768 kHz", many_channels_wav(folder / "bombs" / "16ch-768khz.wav", 16), INDEXED),
        Case("wav 1,024 ch", many_channels_wav(folder / "bombs" / "1024ch.wav", 1024, claimed_s=0.65), FAILED),
    ]
    literal = folder / "names" / LITERAL_ESCAPES
    literal.parent.mkdir(parents=True, exist_ok=True)
    sf.write(literal, good_audio(2.0, 660.0), RATE)
    cases.append(Case("name spelling escaped bytes", literal, INDEXED))
    # bytes that escaped to the same text as latin1-<E9>t<E9>-<FF>.wav: a backslash, then x, e, 9
    twin = folder / os.fsdecode(b"names/latin1-\\xe9t\xe9-\xff.wav")
    sf.write(folder / "names" / "staging.wav", good_audio(2.0), RATE)
    os.rename(folder / "names" / "staging.wav", os.fsencode(twin))
    cases.append(Case("name not utf-8, with a backslash", twin, FAILED))
    link = folder / "links" / "proc-status.wav"
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("/proc/self/status", link)
    cases.append(Case("link to /proc/self/status", link, FAILED))
    return cases


def _segments_of(archive: Path) -> list[Path]:
    return sorted((archive / "vectors").glob("seg-*.faiss"))


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x5A]))


def _rename_first_segment(archive: Path) -> None:
    first = _segments_of(archive)[0]
    first.rename(first.with_name(f"seg-{int(first.name[4:16]) + 1:012d}.faiss"))


def _make_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _replace_vectors_with_a_file(archive: Path) -> None:
    import shutil

    shutil.rmtree(archive / "vectors")
    (archive / "vectors").write_text("not a folder")


ARCHIVE_DAMAGES = {
    "a segment deleted": lambda a: _segments_of(a)[-1].unlink(),
    "vectors/ deleted": lambda a: __import__("shutil").rmtree(a / "vectors"),
    "vectors/ replaced by a file": _replace_vectors_with_a_file,
    "a segment renamed": _rename_first_segment,
    "a segment truncated": lambda a: os.truncate(_segments_of(a)[0], _segments_of(a)[0].stat().st_size - 7),
    "a segment's header damaged": lambda a: _flip(_segments_of(a)[0], 20),
    "a byte flipped in a segment's rows": lambda a: _flip(_segments_of(a)[0], _segments_of(a)[0].stat().st_size - 5),
    "a stray segment of random bytes": lambda a: (a / "vectors" / "seg-000000000003.faiss").write_bytes(os.urandom(4096)),
    "a segment made a folder": lambda a: _make_folder(_segments_of(a)[0]),
}
"""Damage done to an archive's files from outside: each must be named (by the commands that need
the file, and by ``soundtrace check``), never answered from, and mended by ``check --repair``."""
