"""The benchmarks keep running: each prints its table on a small input (timings are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_index_benchmark_prints_its_table():
    out = run_benchmark("benchmarks/index_bench.py", "--tiny", "--files", "2", "--seconds", "20", "--repeat", "1")
    assert "local: end to end / model alone" in out and "local: share of the run, committing" in out and "peak RSS" in out


def test_commit_benchmark_prints_committing_per_file():
    out = run_benchmark("benchmarks/commit_bench.py", "--files", "4", "--seconds", "20", "--repeat", "1")
    assert "committing per file (median of 1)" in out


@pytest.mark.slow
def test_index_benchmark_through_ray_compares_it_with_the_local_engine():
    pytest.importorskip("ray")
    out = run_benchmark("benchmarks/index_bench.py", "--tiny", "--engine", "ray", "--files", "3", "--seconds", "20",
                        "--repeat", "1")
    assert "ray / local" in out and "ray: start-up" in out
    assert next(line for line in out.splitlines() if line.startswith("ray vectors bit-identical")).split()[-1] == "yes"


@pytest.mark.slow
def test_audit_benchmark_prints_its_table():
    out = run_benchmark("benchmarks/audit_bench.py", "--sizes", "5000", "--repeat", "1")
    header = next(line for line in out.splitlines() if line.startswith("windows"))
    assert "text cold s" in header and "e2e warm best/med s" in header and "scan/floor" in header
    rows = [line for line in out.splitlines() if line.strip().startswith("5,000")]
    assert len(rows) == 3  # exclusive, multi-label, with an exclusion


@pytest.mark.slow
def test_scale_benchmark_prints_its_table_with_the_ann_in_use():
    out = run_benchmark("benchmarks/scale_bench.py", "--windows", "6000", "--ann-min-windows", "2000")
    assert "ANN: IVF" in out.splitlines()[0]
    for measure in ("disk bytes per window", "open (fresh process)", "search filter 30%: recall@10 vs exact",
                    "audit 10 labels end to end", "  floor: stream the fp16 rows once", "search process peak RSS",
                    "CLI search, remembered text (wall)"):
        assert any(line.startswith(measure) for line in out.splitlines()), measure
    torch_line = next(line for line in out.splitlines() if line.startswith("torch imported by search"))
    assert torch_line.split()[-2] == "False"  # remembered text: the search process never imports torch


def test_learn_benchmark_prints_its_table():
    out = run_benchmark("benchmarks/learn_bench.py", "--marks", "40", "--weak", "500", "--repeat", "1", "--audit-windows", "3000")
    assert "fit (median)" in out and "ROC-AUC learned / text alone" in out and "audit, the same 10 learned" in out


def test_resample_benchmark_prints_each_option_against_soxr_hq():
    if not (ROOT.parent / "shared" / "audio").is_dir():
        pytest.skip("../shared/audio is not here")
    out = run_benchmark("benchmarks/resample_bench.py", "--no-vectors", "--windows", "1", "--repeat", "1")
    assert "44.1 kHz → 48 kHz, torch sinc (cpu)" in out and "16 kHz → 48 kHz, LQ" in out and "reading 10 s" in out
