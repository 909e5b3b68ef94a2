"""Indexing throughput: end to end (decode + window + model + catalog + index) against the model alone.

Uses a full-size CLAP with random weights (same cost as laion/clap-htsat-fused) unless --tiny.
Prints a table; run it before and after performance work.

    python benchmarks/index_bench.py                 # full-size model, ~2 minutes on 2 cores
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tables import print_table  # noqa: E402

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


class FirstWindows:
    """A progress sink noting when the first embedded windows reach the indexer: for the Ray engine
    what comes before is the instance's and the model actors' start-up, paid once per run."""

    def __init__(self):
        self.at: float | None = None
        self.count = 0

    def stage(self, message):
        pass

    def start(self, files, total_bytes):
        pass

    def file_done(self, path, outcome, size_bytes, audio_s):
        pass

    def windows_embedded(self, count):
        if self.at is None:
            self.at, self.count = time.perf_counter(), count

    def finish(self):
        pass


class FirstCallClock:
    """The encoder, noting when a run first calls the model: what comes before is start-up (the
    decoder process starting and decoding the first batch), paid once per run, not per window."""

    def __init__(self, encoder):
        self._encoder = encoder
        self.first_call: float | None = None

    def embed_audio(self, windows):
        if self.first_call is None:
            self.first_call = time.perf_counter()
        return self._encoder.embed_audio(windows)

    def __getattr__(self, name):
        return getattr(self._encoder, name)


@dataclass
class RunFigures:
    """One engine's measured runs (one entry per run)."""

    rates: list[float] = field(default_factory=list)
    realtime: list[float] = field(default_factory=list)
    model_rates: list[float] = field(default_factory=list)
    shares: list[tuple[float, ...]] = field(default_factory=list)
    startups: list[float] = field(default_factory=list)
    steady_rates: list[float] = field(default_factory=list)
    commit_ms_per_file: list[float] = field(default_factory=list)
    windows: int = 0

    def record(self, report, elapsed: float, audio_s: float, first_call: float | None, started: float,
               first: FirstWindows) -> None:
        self.windows = report.windows_added
        self.rates.append(report.windows_added / elapsed)
        self.realtime.append(audio_s / elapsed)
        self.model_rates.append(report.windows_added / report.model_seconds)
        parts = (report.model_seconds, report.decode_wait_seconds, report.commit_seconds)
        self.shares.append((*parts, max(0.0, elapsed - sum(parts))))
        self.commit_ms_per_file.append(1000 * report.commit_seconds / max(1, report.indexed))
        if first_call is not None:  # the local engine: start-up ends when this process's model starts
            self.startups.append(first_call - started)
            self.steady_rates.append(report.windows_added / (started + elapsed - first_call))
        elif first.at is not None:  # the Ray engine: when the actors' first windows come back
            self.startups.append(first.at - started)
            self.steady_rates.append((report.windows_added - first.count) / max(1e-9, started + elapsed - first.at))


def index_once(directory: Path, folder: Path, encoder, model_config, options: IndexOptions, audio_s: float,
               figures: RunFigures) -> None:
    clock = FirstCallClock(encoder)
    with Archive.open(directory, encoder=clock, encoder_config=model_config, create=True) as archive:
        started = time.perf_counter()
        report = archive.index([folder], options, progress=(first := FirstWindows()))
        elapsed = time.perf_counter() - started
    figures.record(report, elapsed, audio_s, clock.first_call, started, first)


def vectors_of(directory: Path, encoder) -> np.ndarray:
    with Archive.open(directory, encoder=encoder, read_only=True) as archive:
        ids = [row[0] for row in archive.catalog.con.execute("SELECT id FROM windows ORDER BY id").fetchall()]
        return archive.window_vectors(ids)


def engine_rows(name: str, f: RunFigures, alone_rates: list[float]) -> list[tuple[str, str]]:
    med = statistics.median
    ratios = [e / a for e, a in zip(f.rates, alone_rates)]
    rows = [
        (f"{name}: end to end", f"{med(f.rates):.2f} windows/s ({med(f.realtime):.0f}x real time)"),
        (f"{name}: end to end / model alone", f"{med(ratios):.1%} (runs: {', '.join(f'{r:.0%}' for r in ratios)})"),
    ]
    if f.startups:
        until = "first model call" if name == "local" else "first windows back from the actors"
        rows += [
            (f"{name}: start-up (run start to {until})", f"{med(f.startups):.2f} s, once per run"),
            (f"{name}: after start-up", f"{med(f.steady_rates):.2f} windows/s, "
             f"{med(s / a for s, a in zip(f.steady_rates, alone_rates)):.1%} of the model alone (what a long run approaches)"),
        ]
    if f.startups and name == "local":
        rows += [
            (f"{name}: model's own speed inside the run",
             f"{med(f.model_rates):.2f} windows/s ({med(m / a for m, a in zip(f.model_rates, alone_rates)):.0%} of alone)"),
        ]
        names = ("model", "waiting for decoded audio", "committing", "other (start-up, planning)")
        rows += [(f"{name}: share of the run, {part}", f"{med(s[i] / sum(s) for s in f.shares):.1%}")
                 for i, part in enumerate(names)]
    rows.append((f"{name}: committing per file", f"{med(f.commit_ms_per_file):.1f} ms (bounds ingest at "
                 f"{1000 / max(med(f.commit_ms_per_file), 1e-9):.0f} files/s)"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each recording")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each measurement")
    parser.add_argument("--tiny", action="store_true", help="use the tiny test model (smoke run)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: also through a local Ray instance (one model actor per core), against the local engine")
    args = parser.parse_args()

    from indexer.config import EncoderConfig, RayOptions, WindowConfig
    from indexer.model.loading import load_encoder
    from indexer.model.tiny_clap import (
        build_full_size_random_clap,
        build_tiny_clap,
        save_full_size_random_clap,
    )

    engines = {"local": IndexOptions()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_config = None
        if args.tiny:
            model_config = EncoderConfig(model=str(build_tiny_clap(tmp / "tiny")), batch_size=args.batch_size)
        elif args.engine == "ray":  # the actors load the model from a folder
            model_config = EncoderConfig(model=str(save_full_size_random_clap(tmp / "full")), batch_size=args.batch_size)
        encoder = load_encoder(model_config) if model_config else build_full_size_random_clap(batch_size=args.batch_size)
        if args.engine == "ray":
            import ray

            ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            engines["ray"] = IndexOptions(engine="ray", ray=RayOptions())
        folder = tmp / "drop"
        folder.mkdir()
        audio_s = make_recordings(folder, args.files, args.seconds)
        window_cfg = WindowConfig()
        encoder.embed_audio([np.zeros(48_000 * 10, np.float32)] * encoder.batch_size)  # one-off allocation costs

        warm_up = tmp / "warm-up"  # one-off costs of a process's first index run (imports, first archive)
        warm_up.mkdir()
        (warm_up / "rec.wav").write_bytes((folder / "rec000.wav").read_bytes())
        for name, options in engines.items():
            with Archive.open(tmp / f"warm-up-{name}", encoder=encoder, encoder_config=model_config, create=True) as archive:
                archive.index([warm_up], options)

        alone_rates, figures = [], {name: RunFigures() for name in engines}
        for run in range(args.repeat):  # alternate so drift on a shared machine hits every measurement
            n_alone, t_alone = model_alone(encoder, folder, window_cfg)
            alone_rates.append(n_alone / t_alone)
            for name, options in engines.items():
                index_once(tmp / f"{name}{run}", folder, encoder, model_config, options, audio_s, figures[name])
        if "ray" in engines:
            local, distributed = vectors_of(tmp / "local0", encoder), vectors_of(tmp / "ray0", encoder)
            same = local.shape == distributed.shape and local.tobytes() == distributed.tobytes()
            differ = "" if same else f"no: max difference {float(np.abs(local - distributed).max()):.2g}"
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    alone_rate = statistics.median(alone_rates)
    rows = [
        ("model", "tiny test CLAP" if args.tiny else "full-size CLAP (random weights)"),
        ("audio", f"{args.files} files x {args.seconds:g} s = {audio_s / 60:.1f} min, {figures['local'].windows} windows"),
        ("batch size / runs", f"{args.batch_size} / {args.repeat} (medians; runs alternate the measurements)"),
        ("model alone (this process)", f"{alone_rate:.2f} windows/s ({alone_rate * window_cfg.length_s:.0f}x real time)"),
    ]
    if "ray" in engines:
        rows.append(("ray", "a local Ray instance, one model actor per CPU (its start-up counted in each run)"))
    for name in engines:
        rows += engine_rows(name, figures[name], alone_rates)
    if "ray" in engines:
        ratio = [r / l for r, l in zip(figures["ray"].rates, figures["local"].rates)]
        steady = [r / l for r, l in zip(figures["ray"].steady_rates, figures["local"].steady_rates)]
        rows += [
            ("ray / local", f"{statistics.median(ratio):.1%} (runs: {', '.join(f'{r:.0%}' for r in ratio)})"),
            ("ray / local after start-up", f"{statistics.median(steady):.1%}" if steady else "-"),
            ("ray vectors bit-identical to local", "yes" if same else differ),
        ]
    rows.append(("peak RSS (this process)", f"{peak_mb:.0f} MB"))
    print_table(rows)


if __name__ == "__main__":
    main()
