"""Committing cost per file: one-minute recordings (6 windows each) indexed with an instant encoder
(fixed unit vectors at no cost, 512 dimensions like CLAP), so what is timed is the pipeline's own
commit step (``IndexReport.commit_seconds``), not the model.

    python benchmarks/commit_bench.py                   # 240 files, 3 runs, medians
    python benchmarks/commit_bench.py --profile         # and where one run's commit time went
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer import Archive  # noqa: E402
from indexer.embedding import ModelIdentity  # noqa: E402


class InstantEncoder:
    """A stand-in for CLAP that returns fixed unit vectors at no cost."""

    sample_rate = 48_000
    logit_scale = 100.0
    batch_size = 8

    def __init__(self, dim: int = 512):
        self.identity = ModelIdentity("instant", "1", dim)
        vector = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
        self._vector = vector / np.linalg.norm(vector)

    def embed_audio(self, windows):
        return np.tile(self._vector, (len(windows), 1))

    def embed_text(self, labels, prompts=()):
        return np.tile(self._vector, (len(labels), 1))


def make_recordings(folder: Path, files: int, seconds: float) -> None:
    """Quick to decode on purpose (16 kHz mono WAV): the run is about committing."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rate = 16_000
    for i in range(files):
        signal = 0.3 * np.sin(2 * np.pi * (200 + 5 * i) * np.arange(int(seconds * rate)) / rate)
        sf.write(folder / f"rec{i:03d}.wav", (signal + 0.05 * rng.standard_normal(len(signal))).astype(np.float32), rate)


def one_run(folder: Path, work: Path, profile: bool) -> tuple[float, int, float, str]:
    arch = work / f"arch-{time.monotonic_ns()}"
    profiler = cProfile.Profile() if profile else None
    with Archive.open(arch, encoder=InstantEncoder(), create=True) as archive:
        if profiler:
            from indexer.indexing import commits

            real = commits.Committer.commit_ready

            def timed(self, *a, **k):
                profiler.enable()
                try:
                    return real(self, *a, **k)
                finally:
                    profiler.disable()

            commits.Committer.commit_ready = timed
        try:
            report = archive.index([folder])
        finally:
            if profiler:
                commits.Committer.commit_ready = real
    text = ""
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        text = out.getvalue()
    files = report.indexed + len(report.failed) + report.reused
    return report.commit_seconds, files, report.elapsed_s, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=240)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_recordings(work / "drop", args.files, args.seconds)
        per_file, elapsed = [], []
        for r in range(args.repeat):
            seconds, files, took, text = one_run(work / "drop", work, args.profile and r == args.repeat - 1)
            per_file.append(1000 * seconds / max(1, files))
            elapsed.append(took)
            print(f"run {r + 1}: {files} files, committing {seconds:.3f} s = {per_file[-1]:.2f} ms per file "
                  f"(run {took:.1f} s)")
            if text:
                print(text)
        print(f"committing per file (median of {args.repeat}): {statistics.median(per_file):.2f} ms")


if __name__ == "__main__":
    main()
