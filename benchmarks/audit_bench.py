"""Audit throughput: 10 labels against every window of a synthetic archive, against the memory floor.

An audit embeds the label set's text once (a fraction of a second) and then scans the whole
vector matrix (``indexer.audit.scoring.score_archive``). The scan reads the (windows x 512) float32
matrix once, so its floor is the time to stream that matrix once (``np.sum`` over it); everything
score_archive does besides the matrix product works on (windows x labels) arrays.

Per archive size and label-set mode the table shows: the streaming floor, the matrix product
alone, the text tower (``label_vectors``: every label x the 3-prompt ensemble, and the exclusions)
cold and warm (read back from the catalog's text cache, what a label set run again or a standing
audit costs), score_archive (best and median), end to end cold and warm (text + score_archive in
one timed call), the ratio scan / floor, and the process's peak RSS after that size.

Text comes from a full-size CLAP text tower with random weights (``ClapModel(ClapConfig())``, the
cost of laion/clap-htsat-fused), tokenised by the tiny test model's byte-level BPE tokenizer (valid
ids for the full-size vocabulary). Random weights give nearly parallel label vectors, so which label
wins a window means nothing here; the work done does not depend on it.

    python benchmarks/audit_bench.py                          # 100k and 1M windows, ~2 minutes on 2 cores
    python benchmarks/audit_bench.py --sizes 100000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.audit.runner import label_vectors  # noqa: E402
from indexer.archive.catalog import Catalog  # noqa: E402
from indexer.audit.labelset import inline_labelset  # noqa: E402
from indexer.audit.scoring import WindowTable, score_archive  # noqa: E402
from indexer.archive.text_cache import TextVectorCache  # noqa: E402

DIM = 512
WINDOWS_PER_RECORDING = 6
WINDOW_S = HOP_S = 10.0
CENTRES = 2_000
LABELS = (
    "customer shouting at agent", "hold music", "a phone ringing", "keyboard typing", "a baby crying",
    "laughter", "silence", "static noise", "abusive language", "a motor humming",
)
EXCLUSION = "an alarm clock"  # the last label becomes "a motor humming but not an alarm clock"
TARGET_END_TO_END_S = 0.5  # 10 labels x 1M windows
TARGET_SCAN_OVER_FLOOR = 2.0


def labelsets() -> dict[str, object]:
    with_exclusion = list(LABELS[:-1]) + [f"{LABELS[-1]} but not {EXCLUSION}"]
    return {
        "exclusive": inline_labelset(list(LABELS), name="bench", mode="exclusive"),
        "multi-label": inline_labelset(list(LABELS), name="bench", mode="multi-label"),
        "excl. + but-not": inline_labelset(with_exclusion, name="bench", mode="exclusive"),
    }


def text_encoder():
    """Full-size CLAP (random weights) with the tiny model's tokenizer, so ``embed_text`` works."""
    from transformers import AutoTokenizer

    from indexer.model.encoder import ClapEncoder
    from indexer.model.tiny_clap import build_full_size_random_clap, build_tiny_clap

    audio_only = build_full_size_random_clap(device="cpu")
    with tempfile.TemporaryDirectory(prefix="soundtrace-bench-") as tmp:
        tokenizer = AutoTokenizer.from_pretrained(build_tiny_clap(Path(tmp) / "tiny"))
    return ClapEncoder(audio_only.model, audio_only.feature_extractor, tokenizer, audio_only.identity, device="cpu")


def leaning_centres(rng: np.random.Generator, pull: np.ndarray) -> np.ndarray:
    """CENTRES random unit centres, a fifth of them leaning towards one of the ``pull`` directions."""
    centres = rng.standard_normal((CENTRES, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    leaning = CENTRES // 5
    centres[:leaning] = 0.8 * centres[:leaning] + 0.6 * pull[np.arange(leaning) % len(pull)]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres


def synthetic_archive(n: int, pull: np.ndarray, seed: int = 0) -> tuple[np.ndarray, WindowTable]:
    """Clustered unit vectors (float32, n x 512) and their window table: recordings of 6 contiguous windows.

    Each recording draws one of 2,000 random centres; a fifth of the centres lean towards one of the
    ``pull`` directions (the label vectors) so that some recordings score high and get flagged.
    """
    rng = np.random.default_rng(seed)
    centres = leaning_centres(rng, pull)

    recording = np.arange(n, dtype=np.int64) // WINDOWS_PER_RECORDING
    centre_of = rng.integers(0, CENTRES, recording[-1] + 1 if n else 0)
    matrix = np.empty((n, DIM), np.float32)
    chunk = 65_536
    for at in range(0, n, chunk):  # chunked, so generating costs no full-size temporaries
        block = matrix[at : at + chunk]
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        block *= np.float32(0.5 / np.sqrt(DIM))  # noise of norm ~0.5: cosine to the centre ~0.9
        block += centres[centre_of[recording[at : at + chunk]]]
        block /= np.linalg.norm(block, axis=1, keepdims=True)

    position = np.arange(n) % WINDOWS_PER_RECORDING
    start = position * WINDOW_S
    last = (position == WINDOWS_PER_RECORDING - 1) | (np.arange(n) == n - 1)
    length = np.where(last, rng.uniform(1.0, WINDOW_S, n), WINDOW_S)  # a recording's last window is shorter
    channel = np.where(recording % 4 == 3, 1, 0).astype(np.int16)  # some come from the second channel
    windows = WindowTable(
        ids=np.arange(1, n + 1, dtype=np.int64), recording=recording + 1, start_s=start.astype(np.float64),
        end_s=(start + length).astype(np.float64), channel=channel,
    )
    return matrix, windows


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scan_memory_mb(fn):
    """(peak of the memory numpy allocates during ``fn()`` above what was allocated before, fn's result).

    tracemalloc sees numpy's array buffers, so this is the scan's working memory on top of the
    matrix; BLAS's own buffers are not included. Not timed: tracing slows Python down.
    """
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - before) / 2**20, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated window counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (best and median)")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    repeat = max(1, args.repeat)

    import torch

    started_all = time.perf_counter()
    encoder = text_encoder()
    sets = labelsets()
    remembered = Catalog.open(Path(tempfile.mkdtemp(prefix="soundtrace-bench-catalog-")))

    def cached_text(texts: list[str]) -> np.ndarray:
        """A fresh process's view: nothing in memory, the catalog remembers the texts."""
        return TextVectorCache(remembered, encoder.identity, lambda: encoder).embed(texts)

    vectors = {mode: label_vectors(cached_text, ls) for mode, ls in sets.items()}  # warms the tower, fills the catalog
    text_times = {mode: timed(lambda ls=ls: label_vectors(encoder.embed_text, ls), repeat) for mode, ls in sets.items()}
    texts_per_mode = {mode: len(encoder_texts(ls)) for mode, ls in sets.items()}
    plain_texts = timed(lambda: encoder.embed_text(list(LABELS), prompts=("{label}",)), repeat)
    pull = np.concatenate([vectors["excl. + but-not"].vectors, vectors["excl. + but-not"].exclusions])

    rows = []
    for n in sizes:
        matrix, windows = synthetic_archive(n, pull)
        floor = min(timed(lambda: np.sum(matrix), repeat))
        for mode, ls in sets.items():
            lv = vectors[mode]
            queries = np.concatenate([lv.vectors, lv.exclusions]).astype(np.float32)
            matmul = min(timed(lambda: matrix @ queries.T, repeat))

            def scan(lv=lv, ls=ls):
                return score_archive(matrix, windows, lv, ls, encoder.logit_scale, HOP_S)

            def end_to_end(ls=ls, embed_text=encoder.embed_text):
                return score_archive(matrix, windows, label_vectors(embed_text, ls), ls, encoder.logit_scale, HOP_S)

            scans = timed(scan, repeat)
            e2e = timed(end_to_end, repeat)
            e2e_warm = timed(lambda ls=ls: end_to_end(ls, cached_text), repeat)
            text_times[mode] += timed(lambda ls=ls: label_vectors(encoder.embed_text, ls), repeat)  # best over the run
            text_warm = timed(lambda ls=ls: label_vectors(cached_text, ls), repeat)
            scan_mb, result = scan_memory_mb(scan)
            rows.append(dict(
                n=n, mode=mode, mb=matrix.nbytes / 2**20, floor=floor, matmul=matmul,
                text=min(text_times[mode]), texts=texts_per_mode[mode], text_warm=min(text_warm), scan=min(scans),
                scan_med=statistics.median(scans), e2e=min(e2e), e2e_med=statistics.median(e2e),
                e2e_warm=min(e2e_warm), e2e_warm_med=statistics.median(e2e_warm),
                flagged=float(result.flagged.mean()), scan_mb=scan_mb, rss=peak_rss_mb(),
            ))
        del matrix, windows

    print_table(rows, repeat, encoder, torch, plain_texts, time.perf_counter() - started_all)


def encoder_texts(ls) -> list[str]:
    """The texts label_vectors sends to the text tower: every prompt and exclusion x the prompt ensemble."""
    from indexer.embedding import DEFAULT_PROMPTS

    prompts = [p for label in ls.labels for p in label.prompts]
    excluded = sorted({e for label in ls.labels for e in label.exclude})
    return [t.replace("{label}", x) for x in prompts + excluded for t in DEFAULT_PROMPTS]


def print_table(rows, repeat, encoder, torch, plain_texts, total_s) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.machine()}, {cores} cores usable, numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"text tower: full-size CLAP text model, random weights; logit scale {encoder.logit_scale:.2f}; "
          f"{len(LABELS)} labels x 1 prompt (no ensemble) = {min(plain_texts) * 1000:.0f} ms best")
    print(f"times are best of {repeat} (median where shown); 'scan' = score_archive, 'e2e' = label_vectors + score_archive")
    print("'text cold' = the text tower on every text; 'text warm' = the same texts read back from the catalog by a fresh "
          "TextVectorCache (what a label set run again costs)")
    print("'flagged' = share of (recording, label) pairs flagged; 'scan +MB' = peak numpy allocations during one scan (tracemalloc); "
          "'peak RSS' = ru_maxrss of the whole process (model and matrix included)")
    print()
    header = ("windows", "mode", "matrix MB", "floor s", "matmul s", "text cold s (texts)", "text warm s",
              "scan best/med s", "e2e cold best/med s", "e2e warm best/med s", "scan/floor", "flagged", "scan +MB",
              "peak RSS MB")
    table = [header]
    for r in rows:
        table.append((
            f"{r['n']:,}", r["mode"], f"{r['mb']:.0f}", f"{r['floor']:.3f}", f"{r['matmul']:.3f}",
            f"{r['text']:.3f} ({r['texts']})", f"{r['text_warm']:.3f}", f"{r['scan']:.3f} / {r['scan_med']:.3f}",
            f"{r['e2e']:.3f} / {r['e2e_med']:.3f}", f"{r['e2e_warm']:.3f} / {r['e2e_warm_med']:.3f}",
            f"{r['scan'] / r['floor']:.1f}x", f"{r['flagged']:.1%}",
            f"{r['scan_mb']:.0f}", f"{r['rss']:.0f}",
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.rjust(w) if j not in (1,) else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    million = [r for r in rows if r["n"] == 1_000_000]
    if million:
        worst_ratio = max(r["scan"] / r["floor"] for r in million)
        print()
        for key, what in (("e2e", "label set never seen (cold text tower)"), ("e2e_warm", "label set run before (text from the catalog)")):
            worst = max(r[key] for r in million)
            print(f"target, 10 labels x 1M windows end to end <= {TARGET_END_TO_END_S} s, {what}: "
                  f"{'met' if worst <= TARGET_END_TO_END_S else 'NOT met'} (slowest mode {worst:.3f} s)")
        print(f"target, scan within {TARGET_SCAN_OVER_FLOOR:g}x of the streaming floor: "
              f"{'met' if worst_ratio <= TARGET_SCAN_OVER_FLOOR else 'NOT met'} (worst {worst_ratio:.1f}x)")
    print(f"benchmark wall time {total_s:.0f} s")


if __name__ == "__main__":
    main()
