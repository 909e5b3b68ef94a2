"""Indexing throughput: end to end (decode + window + model + catalog + index) against the model alone.

Uses a full-size CLAP with random weights (same cost as laion/clap-htsat-fused) unless --tiny.
Prints a table; run it before and after performance work.

    python benchmarks/index_bench.py                 # full-size model, ~3 minutes on 2 cores
    python benchmarks/index_bench.py --tiny          # a quick smoke run with the tiny test model
    python benchmarks/index_bench.py --engine ray    # the same through a local Ray instance (model actors)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer import Archive, IndexOptions  # noqa: E402
from indexer.audio import decode as audio  # noqa: E402
from indexer.audio.windows import cut_windows  # noqa: E402


def make_recordings(folder: Path, files: int, seconds: float) -> float:
    """Speech-like test audio: 16 kHz mono WAV and 44.1 kHz stereo FLAC, alternating (both decoders' paths)."""
    rng = np.random.default_rng(0)
    total = 0.0
    for i in range(files):
        rate, channels, ext = ((16_000, 1, "wav"), (44_100, 2, "flac"))[i % 2]
        n = int(seconds * rate)
        t = np.arange(n) / rate
        signal = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
        signal = signal + 0.05 * rng.standard_normal(n)
        data = np.stack([signal] * channels, axis=1) if channels > 1 else signal
        sf.write(folder / f"rec{i:03d}.{ext}", data.astype(np.float32), rate)
        total += seconds
    return total


def model_alone(encoder, folder: Path, window_cfg) -> tuple[int, float]:
    windows = []
    for path in sorted(folder.iterdir()):
        _, blocks = audio.stream(path)
        windows.extend(w.samples for w in cut_windows(blocks, window_cfg))
    started = time.perf_counter()
    for i in range(0, len(windows), encoder.batch_size):
        encoder.embed_audio(windows[i : i + encoder.batch_size])
    return len(windows), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each recording")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each measurement")
    parser.add_argument("--tiny", action="store_true", help="use the tiny test model (smoke run)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: a local Ray instance, one model actor per core (its start-up is counted)")
    args = parser.parse_args()

    from indexer.config import EncoderConfig, RayOptions
    from indexer.model.loading import load_encoder
    from indexer.model.tiny_clap import build_full_size_random_clap, build_tiny_clap, save_full_size_random_clap

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        options = IndexOptions()
        model_config = None
        if args.tiny:
            model_config = EncoderConfig(model=str(build_tiny_clap(tmp / "tiny")), batch_size=args.batch_size)
        elif args.engine == "ray":  # the actors load the model from a folder
            model_config = EncoderConfig(model=str(save_full_size_random_clap(tmp / "full")), batch_size=args.batch_size)
        encoder = load_encoder(model_config) if model_config else build_full_size_random_clap(batch_size=args.batch_size)
        if args.engine == "ray":
            import ray

            ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            options = IndexOptions(engine="ray", ray=RayOptions())
        folder = tmp / "drop"
        folder.mkdir()
        audio_s = make_recordings(folder, args.files, args.seconds)
        from indexer.config import WindowConfig

        window_cfg = WindowConfig()
        warm = [np.zeros(48_000 * 10, np.float32)] * encoder.batch_size
        encoder.embed_audio(warm)  # first call pays one-off allocation costs

        alone_rates, e2e_rates, model_share, realtime = [], [], [], []
        for run in range(args.repeat):  # alternate the two so drift on a shared machine hits both
            n_alone, t_alone = model_alone(encoder, folder, window_cfg)
            alone_rates.append(n_alone / t_alone)
            with Archive.open(tmp / f"archive{run}", encoder=encoder, encoder_config=model_config, create=True) as archive:
                started = time.perf_counter()
                report = archive.index([folder], options)
                t_e2e = time.perf_counter() - started
            e2e_rates.append(report.windows_added / t_e2e)
            model_share.append(report.model_seconds / t_e2e)
            realtime.append(audio_s / t_e2e)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    alone_rate, e2e_rate = statistics.median(alone_rates), statistics.median(e2e_rates)
    ratios = [e / a for e, a in zip(e2e_rates, alone_rates)]
    rows = [
        ("model", "tiny test CLAP" if args.tiny else "full-size CLAP (random weights)"),
        ("engine", "local" if args.engine == "local" else f"ray (local instance, {options.ray.workers or 'one per CPU'} model actors)"),
        ("audio", f"{args.files} files x {args.seconds:g} s = {audio_s / 60:.1f} min, {report.windows_added} windows"),
        ("batch size / runs", f"{args.batch_size} / {args.repeat} (medians; each run alternates the two)"),
        ("model alone", f"{alone_rate:.2f} windows/s ({alone_rate * window_cfg.length_s:.0f}x real time)"),
        ("end to end", f"{e2e_rate:.2f} windows/s ({statistics.median(realtime):.0f}x real time)"),
        ("end to end / model alone", f"{statistics.median(ratios):.1%} (runs: {', '.join(f'{r:.0%}' for r in ratios)})"),
        ("share of the run in the model", f"{statistics.median(model_share):.1%}"),
        ("peak RSS", f"{peak_mb:.0f} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
