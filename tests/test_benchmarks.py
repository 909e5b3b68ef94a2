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
    assert "end to end / model alone" in out and "peak RSS" in out


@pytest.mark.slow
def test_audit_benchmark_prints_its_table():
    out = run_benchmark("benchmarks/audit_bench.py", "--sizes", "5000", "--repeat", "1")
    header = next(line for line in out.splitlines() if line.startswith("windows"))
    assert "text cold s" in header and "e2e warm best/med s" in header and "scan/floor" in header
    rows = [line for line in out.splitlines() if line.strip().startswith("5,000")]
    assert len(rows) == 3  # exclusive, multi-label, with an exclusion


@pytest.mark.slow
def test_audit_archive_benchmark_prints_its_table():
    out = run_benchmark("benchmarks/audit_archive_bench.py", "--windows", "3000", "--repeat", "1")
    lines = out.splitlines()
    for step in ("open read-only, index file 10% behind (caught up)", "run_audit end to end", "  save_run (one row"):
        assert any(line.startswith(step) for line in lines), step
