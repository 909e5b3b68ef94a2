"""Indexing throughput: end to end (decode + window + model + catalog + index) against its two
ceilings, the model alone and the pipeline alone (decoding, hand-off and committing, measured with
``--encoder instant``'s free vectors for 1, 2, … decoding processes).

Uses a full-size CLAP with random weights (same cost as laion/clap-htsat-fused), saved as a folder
and loaded through the real loading path, unless --tiny. Prints a table; run it before and after
performance work.

    python benchmarks/index_bench.py                 # full-size model, ~3 minutes on 2 cores
    python benchmarks/index_bench.py --tiny          # a quick smoke run with the tiny test model
    python benchmarks/index_bench.py --encoder instant --ceiling 1,2,4   # the pipeline's own ceiling
    python benchmarks/index_bench.py --device cuda --precision bf16 --batch-size 64 --decoders 15
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
from indexer.embedding import ModelIdentity, submit_audio  # noqa: E402
from indexer.indexing.decoder_pool import default_decoders  # noqa: E402

HANDOFF_CHILD = """
import pickle, sys, numpy as np
out = sys.stdout.buffer
window = np.random.default_rng(0).standard_normal(480_000).astype(np.float32)
for i in range({count}):
    pickle.dump(("window", i, window), out, protocol=pickle.HIGHEST_PROTOCOL)
out.flush()
"""


class InstantEncoder:
    """Fixed unit vectors at no cost: what is left is the pipeline's own ceiling."""

    sample_rate = 48_000
    logit_scale = 10.0

    def __init__(self, batch_size: int = 8, dim: int = 512):
        self.identity = ModelIdentity("instant", "instant-1", dim)
        self.batch_size = batch_size
        self._unit = np.full(dim, 1 / np.sqrt(dim), np.float32)

    def embed_audio(self, windows):
        return np.tile(self._unit, (len(windows), 1))

    def embed_text(self, labels, prompts=()):
        return np.tile(self._unit, (len(labels), 1))


def decode_ceiling(folder: Path, window_cfg) -> float:
    """Windows/s one process decodes and cuts (this process, one core, nothing beside it)."""
    count, started = 0, time.perf_counter()
    for path in sorted(folder.iterdir()):
        _, blocks = audio.stream(path)
        count += sum(1 for _ in cut_windows(blocks, window_cfg))
    return count / (time.perf_counter() - started)


def handoff_ms(count: int = 200) -> float:
    """This process's CPU per 10 s window received pickled through a pipe (how decoders hand over)."""
    import pickle
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", HANDOFF_CHILD.format(count=count)], stdout=subprocess.PIPE)
    cpu = time.process_time()
    for _ in range(count):
        pickle.load(child.stdout)
    spent = time.process_time() - cpu
    child.wait()
    return 1000 * spent / count


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
        self._started()
        return self._encoder.embed_audio(windows)

    def submit(self, windows):
        self._started()
        return submit_audio(self._encoder, windows)

    def _started(self) -> None:
        if self.first_call is None:
            self.first_call = time.perf_counter()

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
    parser.add_argument("--batch-size", type=int, default=None, help="windows per model call [default: the device's]")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "tf32", "bf16", "fp16"))
    parser.add_argument("--decoders", type=int, default=None, help="decoding processes end to end [default: cores minus one, at least two]")
    parser.add_argument("--ceiling", default=None,
                        help="decoder counts for the pipeline ceiling, e.g. 1,2,4 [default: 1 and 2, and --decoders]")
    parser.add_argument("--encoder", choices=("clap", "instant"), default="clap",
                        help="instant: free vectors, so end to end is the pipeline's own ceiling")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each measurement")
    parser.add_argument("--tiny", action="store_true", help="use the tiny test model (smoke run)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: also through a local Ray instance (one model actor per core), against the local engine")
    args = parser.parse_args()

    from indexer.config import EncoderConfig, RayOptions, WindowConfig
    from indexer.model.loading import load_encoder
    from indexer.model.tiny_clap import build_tiny_clap, save_full_size_random_clap

    decoders = args.decoders or default_decoders()
    ceiling_counts = sorted({int(n) for n in args.ceiling.split(",")} if args.ceiling else {1, 2, decoders})
    engines = {"local": IndexOptions(decoders=decoders)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_config = None
        if args.encoder == "instant":
            encoder = InstantEncoder(args.batch_size or 8)
        else:
            folder = build_tiny_clap(tmp / "tiny") if args.tiny else save_full_size_random_clap(tmp / "full")
            model_config = EncoderConfig(model=str(folder), device=args.device, precision=args.precision,
                                         batch_size=args.batch_size)
            encoder = load_encoder(model_config)
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

        decode_rates = [decode_ceiling(folder, window_cfg) for _ in range(max(1, args.repeat // 2))]
        handoff = statistics.median(handoff_ms() for _ in range(3))
        instant = InstantEncoder(encoder.batch_size, encoder.identity.dim)
        ceilings: dict[int, RunFigures] = {n: RunFigures() for n in ceiling_counts}
        alone_rates, figures = [], {name: RunFigures() for name in engines}
        for run in range(args.repeat):  # alternate so drift on a shared machine hits every measurement
            for n in ceiling_counts:
                index_once(tmp / f"ceiling{n}-{run}", folder, instant, None, IndexOptions(decoders=n), audio_s, ceilings[n])
            if args.encoder == "instant":
                continue
            n_alone, t_alone = model_alone(encoder, folder, window_cfg)
            alone_rates.append(n_alone / t_alone)
            for name, options in engines.items():
                index_once(tmp / f"{name}{run}", folder, encoder, model_config, options, audio_s, figures[name])
        if "ray" in engines:
            local, distributed = vectors_of(tmp / "local0", encoder), vectors_of(tmp / "ray0", encoder)
            same = local.shape == distributed.shape and local.tobytes() == distributed.tobytes()
            differ = "" if same else f"no: max difference {float(np.abs(local - distributed).max()):.2g}"
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    med = statistics.median
    windows = ceilings[ceiling_counts[0]].windows
    described = ("instant (free vectors)" if args.encoder == "instant"
                 else "tiny test CLAP" if args.tiny else "full-size CLAP (random weights)")
    device = getattr(encoder, "device", "cpu")
    rows = [
        ("model", f"{described} on {device}, precision {getattr(encoder, 'precision', 'fp32')}"),
        ("audio", f"{args.files} files x {args.seconds:g} s = {audio_s / 60:.1f} min, {windows} windows"),
        ("batch size / runs", f"{encoder.batch_size} / {args.repeat} (medians; runs alternate the measurements)"),
        ("decode ceiling, one process", f"{med(decode_rates):.1f} windows/s (decode + resample + cut, one core)"),
        ("hand-off per window (pipe)", f"{handoff:.2f} ms of the model process's CPU per 10 s window"),
    ]
    one = med(ceilings[ceiling_counts[0]].rates)
    for n in ceiling_counts:
        rate = med(ceilings[n].rates)
        rows.append((f"pipeline ceiling, {n} decoder{'s' if n > 1 else ''}",
                     f"{rate:.1f} windows/s ({rate / one:.2f}x {ceiling_counts[0]}); committing "
                     f"{med(ceilings[n].commit_ms_per_file):.2f} ms per file"))
    if alone_rates:
        alone_rate = med(alone_rates)
        rows.append(("model alone (this process)", f"{alone_rate:.2f} windows/s ({alone_rate * window_cfg.length_s:.0f}x real time)"))
        if "ray" in engines:
            rows.append(("ray", "a local Ray instance, one model actor per CPU (its start-up counted in each run)"))
        rows.append(("local decoders", str(decoders)))
        for name in engines:
            rows += engine_rows(name, figures[name], alone_rates)
        ceiling = med(ceilings[decoders].rates) if decoders in ceilings else None
        if ceiling:
            bound = min(alone_rate, ceiling)
            rows.append(("local: end to end / min(model alone, pipeline ceiling)",
                         f"{med(figures['local'].rates) / bound:.1%} (bound {bound:.1f} windows/s)"))
    if "ray" in engines:
        ratio = [r / l for r, l in zip(figures["ray"].rates, figures["local"].rates)]
        steady = [r / l for r, l in zip(figures["ray"].steady_rates, figures["local"].steady_rates)]
        rows += [
            ("ray / local", f"{med(ratio):.1%} (runs: {', '.join(f'{r:.0%}' for r in ratio)})"),
            ("ray / local after start-up", f"{med(steady):.1%}" if steady else "-"),
            ("ray vectors bit-identical to local", "yes" if same else differ),
        ]
    rows.append(("peak RSS (this process)", f"{peak_mb:.0f} MB"))
    print_table(rows)


if __name__ == "__main__":
    main()
