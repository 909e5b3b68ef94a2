"""Learned labels: how long a fit takes (and its cross-validation), on synthetic 512-d vectors, and
an audit of 10 learned labels against the same audit with text labels over an archive of synthetic
windows (target: within 10%).

    python benchmarks/learn_bench.py                          # 200 marks + 10,000 weak negatives; audit at 1M windows
    python benchmarks/learn_bench.py --audit-windows 100000   # a quicker audit comparison (0: none)

Prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tables import print_table  # noqa: E402

from indexer.learning.fit import FitOptions, evaluate, fit_scorer  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def audit_comparison(windows: int, repeat: int) -> list[tuple[str, str]]:
    """scale_bench's archive of ``windows`` clustered windows (no ANN index: audits scan), the 10 labels
    of audit_bench learned from 20 marks each, then the audit both ways, alternating."""
    import tempfile
    from dataclasses import replace

    from audit_bench import LABELS
    from scale_bench import build

    from indexer.audit.labelset import inline_labelset
    from indexer.audit.runner import run_audit
    from indexer.learning.learned import learn_label
    from indexer.learning.marks import mark_windows
    from indexer.session import Session

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="soundtrace-learn-") as tmp:
        directory = Path(tmp) / "archive"
        built = build(directory, windows, ann_min_windows=windows + 1)["ingest_s"]
        with Session.open(directory) as archive:  # every label's text is remembered: no model loads
            text_set = inline_labelset(list(LABELS), name="text", mode="multi-label")
            learned_set = replace(text_set, name="learned", labels=tuple(replace(x, learned=True) for x in text_set.labels))
            ids = archive.store.ids()
            fit_s = []
            for label in LABELS:
                mark_windows(archive, label, rng.choice(ids, 20, replace=False), [True] * 10 + [False] * 10)
                t = time.perf_counter()
                learn_label(archive, label, FitOptions(weak_negatives=2_000))
                fit_s.append(time.perf_counter() - t)
            text_s, learned_s = [], []
            for _ in range(repeat):
                for labelset, times in ((text_set, text_s), (learned_set, learned_s)):
                    t = time.perf_counter()
                    run_audit(archive, labelset)
                    times.append(time.perf_counter() - t)
    text, learned = statistics.median(text_s), statistics.median(learned_s)
    return [
        ("audit archive", f"{windows:,} windows (built in {built:.0f} s)"),
        ("learn 1 label: 20 marks + 2,000 weak (median)", f"{statistics.median(fit_s) * 1000:.0f} ms"),
        ("audit, 10 text labels (median)", f"{text:.2f} s"),
        ("audit, the same 10 learned (median)", f"{learned:.2f} s ({learned / text - 1:+.1%}; target within 10%)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--marks", type=int, default=200)
    parser.add_argument("--weak", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--audit-windows", type=int, default=1_000_000, help="0: no audit comparison")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    event = unit(rng.standard_normal(args.dim))
    text = unit(event + 1.5 * rng.standard_normal(args.dim) / np.sqrt(args.dim) * 8)  # a prior that is off
    positive = rng.random(args.marks) < 0.3
    marked = unit(rng.standard_normal((args.marks, args.dim)) + 4.0 * positive[:, None] * event)
    weak = unit(rng.standard_normal((args.weak, args.dim)))
    options = FitOptions(weak_negatives=args.weak)

    fits, evals = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        fit_scorer(text, marked, positive, weak, options)
        fits.append(time.perf_counter() - t)
        t = time.perf_counter()
        figures = evaluate(text, marked, positive, weak, options)
        evals.append(time.perf_counter() - t)
    rows = [
        ("marks / weak negatives / dim", f"{args.marks} ({int(positive.sum())} positive) / {args.weak:,} / {args.dim}"),
        ("fit (median)", f"{statistics.median(fits) * 1000:.0f} ms"),
        (f"cross-validation, {figures.folds} folds (median)", f"{statistics.median(evals) * 1000:.0f} ms"),
        ("ROC-AUC learned / text alone", f"{figures.roc_auc:.3f} / {figures.text_roc_auc:.3f}"),
        ("precision@10 learned / text alone", f"{figures.precision_at_10:.2f} / {figures.text_precision_at_10:.2f}"),
    ]
    if args.audit_windows:
        rows += audit_comparison(args.audit_windows, args.repeat)
    print_table(rows, value_rule=30)


if __name__ == "__main__":
    main()
