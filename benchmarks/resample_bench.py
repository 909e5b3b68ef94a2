"""Resampling, the larger part of decoding a window: what it costs per 10 s window and what the
cheaper options would change (issue 21's stretch: could the GPU resample in batches?).

For real recordings of ../shared/audio at 44.1 kHz, 16 kHz and 8 kHz, one 10 s window each,
downmixed: soxr at each quality (the archive uses HQ) and a windowed-sinc polyphase filter in
torch (torchaudio's design: Hann window, 6 zero crossings, roll-off 0.99) on the CPU, one window
at a time, and on CUDA in batches of 64 when a GPU is there. For each, the time per window, the
largest sample difference from HQ, the largest difference of CLAP's log-mel (dB, the model's
input, averaged over its bins) and the lowest cosine of its vector to HQ's (full-size CLAP with random weights, so a
proxy for the trained model's sensitivity).

    python benchmarks/resample_bench.py               # ~1 minute on 2 cores
    python benchmarks/resample_bench.py --no-vectors  # times and mel only
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tables import print_table  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "audio"
TARGET = 48_000
WINDOW_S = 10.0


def sinc_kernel(orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> tuple[torch.Tensor, int]:
    """(new, 1, taps) polyphase kernel and its half width, for orig → new (reduced by their gcd)."""
    base = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base).clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=torch.float64), t.sin() / t) * window * base / orig
    return kernel.to(torch.float32), width


def torch_resample(waves: torch.Tensor, rate: int, kernel: torch.Tensor, width: int) -> torch.Tensor:
    """(B, n) at ``rate`` → (B, ceil(n·48000/rate)) at 48 kHz."""
    g = math.gcd(rate, TARGET)
    orig, new = rate // g, TARGET // g
    n = waves.shape[-1]
    padded = torch.nn.functional.pad(waves[:, None], (width, width + orig))
    out = torch.nn.functional.conv1d(padded, kernel, stride=orig)  # (B, new, frames)
    out = out.transpose(1, 2).reshape(waves.shape[0], -1)
    return out[:, : math.ceil(new * n / orig)]


def windows_at(rate: int, count: int) -> list[np.ndarray]:
    """Up to ``count`` 10 s mono windows from ../shared/audio recordings at ``rate``."""
    found = []
    for path in sorted(SHARED.rglob("*")):
        if path.suffix.lower() not in {".wav", ".flac", ".ogg", ".mp3"}:
            continue
        try:
            info = sf.info(str(path))
        except Exception:  # noqa: BLE001 — the format zoo's files libsndfile cannot read
            continue
        if info.samplerate != rate or info.duration < 3:
            continue
        data, _ = sf.read(str(path), frames=int(WINDOW_S * rate), dtype="float32", always_2d=True)
        wave = data.mean(axis=1)
        found.append(np.pad(wave, (0, int(WINDOW_S * rate) - len(wave))))
        if len(found) == count:
            break
    return found


def per_window_ms(fn, items, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - started) / len(items))
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=4, help="windows per source rate")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-vectors", action="store_true", help="skip the full-size CLAP's vectors")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is not here: this benchmark reads its real recordings.")
    torch.set_num_threads(1)  # a decoder process's share: one core
    from indexer.model.tiny_clap import build_full_size_random_clap

    clap = build_full_size_random_clap(batch_size=args.windows)
    rows: list[tuple[str, str]] = []
    for rate in (44_100, 16_000, 8_000):
        waves = windows_at(rate, args.windows)
        if not waves:
            continue
        reference = [soxr.resample(w, rate, TARGET, quality="HQ") for w in waves]
        ref_mel = clap.audio_inputs(reference)["input_features"]
        ref_vec = None if args.no_vectors else clap.embed_audio(reference)
        g = math.gcd(rate, TARGET)
        kernel, width = sinc_kernel(rate // g, TARGET // g)
        variants = {q: (lambda w, q=q: soxr.resample(w, rate, TARGET, quality=q)) for q in ("VHQ", "HQ", "MQ", "LQ", "QQ")}
        variants["torch sinc (cpu)"] = lambda w: torch_resample(torch.from_numpy(w)[None], rate, kernel, width)[0].numpy()
        for name, fn in variants.items():
            ms = per_window_ms(fn, waves, args.repeat)
            out = [fn(w) for w in waves]
            n = min(len(out[0]), len(reference[0]))
            diff = max(float(np.abs(o[:n] - r[:n]).max()) for o, r in zip(out, reference))
            mel = float((clap.audio_inputs(out)["input_features"] - ref_mel).abs().mean())
            effect = f"max |Δ| {diff:.1e}, mel mean |Δ| {mel:.3f} dB"
            if ref_vec is not None and name != "HQ":
                effect += f", cosine ≥ {float((clap.embed_audio(out) * ref_vec).sum(axis=1).min()):.6f}"
            rows.append((f"{rate / 1000:g} kHz → 48 kHz, {name}", f"{ms:7.2f} ms/window  ({effect})"))
        if torch.cuda.is_available():
            batch = torch.from_numpy(np.stack(waves * math.ceil(64 / len(waves)))[:64]).cuda()
            on_gpu = kernel.cuda()
            torch_resample(batch, rate, on_gpu, width)
            torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(10):
                torch_resample(batch, rate, on_gpu, width)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - started) / 10 / 64 * 1000
            rows.append((f"{rate / 1000:g} kHz → 48 kHz, torch sinc (cuda, batch 64)", f"{ms:7.3f} ms/window"))
        read_ms = _read_ms(rate)
        if read_ms is not None:
            rows.append((f"{rate / 1000:g} kHz: reading 10 s (soundfile, as decode does)", f"{read_ms:7.2f} ms/window"))
    print_table(rows)


def _read_ms(rate: int) -> float | None:
    """Reading (no resampling) 10 s of the first long-enough recording at ``rate``, per window."""
    for path in sorted(SHARED.rglob("*.*")):
        try:
            info = sf.info(str(path))
        except Exception:  # noqa: BLE001
            continue
        if info.samplerate == rate and info.duration >= WINDOW_S:
            return per_window_ms(lambda p: sf.read(str(p), frames=int(WINDOW_S * rate), dtype="float32"), [path] * 5, 3)
    return None


if __name__ == "__main__":
    main()
