"""An audit through a real archive: what ``soundtrace audit run`` costs beyond the scan.

``audit_bench.py`` times the arithmetic on arrays in memory. A real run also reads the window
table from the catalog, takes the vectors from the FAISS store, and writes one result row per
recording and label back to DuckDB. This benchmark builds an archive of synthetic windows (the
same clustered vectors as ``audit_bench.py``, recordings of 6 windows) in a temporary folder and
times, for a label set whose text the archive already remembers:

- opening the archive read-only: FAISS file current; file 10% behind the catalog (what a search
  pays while ``index`` writes: the file is brought up to date); file missing (rebuilt from the
  catalog),
- ``run_audit`` end to end, and its parts: ``collect_windows``, ``label_vectors`` (text from the
  catalog), ``score_archive``, ``save_run``.

    python benchmarks/audit_archive_bench.py                    # 1M windows, ~3 minutes on 2 cores
    python benchmarks/audit_archive_bench.py --windows 200000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_bench import HOP_S, WINDOW_S, labelsets, synthetic_archive, text_encoder, timed  # noqa: E402
from indexer import Archive  # noqa: E402
from indexer.audit.runner import collect_windows, label_vectors, run_audit, score  # noqa: E402
from indexer.audit.saved_runs import save_run  # noqa: E402
from indexer.config import WindowConfig  # noqa: E402
from indexer.archive.manifest import MANIFEST_FILE  # noqa: E402
from indexer.archive.vector_store import INDEX_FILE  # noqa: E402
from indexer.audit.scoring import WindowTable, score_archive  # noqa: E402


def fill(archive: Archive, matrix: np.ndarray, windows) -> None:
    """Write synthetic recordings and windows into the catalog in one transaction, as indexing would."""
    catalog = archive.catalog
    recordings = np.unique(windows.recording)
    ends = np.maximum.reduceat(windows.end_s, np.searchsorted(windows.recording, recordings))
    rec_table = pa.table({
        "id": recordings, "path": [f"/archive/calls/call-{r:07d}.wav" for r in recordings],
        "file_name": [f"call-{r:07d}.wav" for r in recordings], "duration_s": ends,
    })  # fmt: skip
    win_table = pa.table({
        "id": windows.ids, "recording_id": windows.recording, "channel": windows.channel.astype(np.int16),
        "start_s": windows.start_s, "end_s": windows.end_s,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1]),
    })  # fmt: skip
    with catalog.transaction():
        catalog.con.register("_recs", rec_table)
        catalog.con.register("_wins", win_table)
        catalog.con.execute(
            "INSERT INTO recordings (id, path, file_name, duration_s, status, indexed_at)"
            " SELECT id, path, file_name, duration_s, 'indexed', now() FROM _recs"
        )
        catalog.con.execute(
            "INSERT INTO windows (id, recording_id, channel, start_s, end_s, embedding)"
            " SELECT id, recording_id, channel, start_s, end_s, embedding FROM _wins"
        )
        catalog.con.execute("UPDATE state SET value = (SELECT max(id) + 1 FROM windows) WHERE key = 'next_window_id'")
        catalog.con.execute("UPDATE state SET value = value + 1 WHERE key = 'generation'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repeat = max(1, args.repeat)
    encoder = text_encoder()
    labelset = labelsets()["excl. + but-not"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="soundtrace-audit-archive-") as tmp:
        directory = Path(tmp) / "archive"
        window_config = WindowConfig(length_s=WINDOW_S, hop_s=HOP_S)
        with Archive.open(directory, encoder=encoder, create=True, windows=window_config) as archive:
            lv = label_vectors(archive.embed_text, labelset)  # the catalog remembers the text from here on
            matrix, windows = synthetic_archive(args.windows, np.concatenate([lv.vectors, lv.exclusions]))
            first = windows.recording <= windows.recording[int(len(windows.ids) * 0.9)]  # whole recordings
            started = time.perf_counter()
            fill(archive, matrix[first], WindowTable(*(getattr(windows, f)[first] for f in WindowTable.__dataclass_fields__)))
            rows.append(("write 90% to the catalog (one transaction)", [time.perf_counter() - started]))
        with Archive.open(directory, encoder=encoder):  # builds and writes the FAISS file
            pass
        stale = {name: (directory / name).read_bytes() for name in (INDEX_FILE, MANIFEST_FILE)}
        with Archive.open(directory, encoder=encoder) as archive:
            fill(archive, matrix[~first], WindowTable(*(getattr(windows, f)[~first] for f in WindowTable.__dataclass_fields__)))
        del matrix, windows
        for name, data in stale.items():  # as if the run writing the last 10% had not flushed yet
            (directory / name).write_bytes(data)

        def open_read_only() -> None:
            with Archive.open(directory, encoder=encoder, read_only=True) as archive:
                assert len(archive.store) == archive.catalog.window_count()

        rows.append(("open read-only, index file 10% behind (caught up)", timed(open_read_only, repeat)))
        (directory / INDEX_FILE).rename(directory / "hidden")
        rows.append(("open read-only, index file missing (rebuilt)", timed(open_read_only, 1)))
        (directory / "hidden").rename(directory / INDEX_FILE)
        with Archive.open(directory, encoder=encoder):  # catches up and writes the file
            pass
        rows.append(("open read-only, index file current", timed(open_read_only, repeat)))

        with Archive.open(directory, encoder=encoder) as archive:
            run_audit(archive, labelset)  # warms up; the text is remembered already
            rows.append(("run_audit end to end", timed(lambda: run_audit(archive, labelset), repeat)))
            rows.append(("  collect_windows (catalog + store)", timed(lambda: collect_windows(archive), repeat)))
            rows.append(("  label_vectors (text from the catalog)",
                         timed(lambda: label_vectors(archive.embed_text, labelset), repeat)))  # fmt: skip
            m, w = collect_windows(archive)
            vectors = label_vectors(archive.embed_text, labelset)
            rows.append(("  score_archive", timed(
                lambda: score_archive(m, w, vectors, labelset, encoder.logit_scale, HOP_S), repeat)))  # fmt: skip
            scores = score(archive, labelset)
            rows.append(("  save_run (one row per recording and label)",
                         timed(lambda: save_run(archive, labelset, "{}", scores, False, 0.0), repeat)))  # fmt: skip
            recordings, labels = scores.score.shape

    print(f"archive: {args.windows:,} windows in {recordings:,} recordings; {labels} labels "
          f"(+1 exclusion); times in seconds, best and median of {repeat} (the rebuild and the write: one run)")
    print()
    width = max(len(name) for name, _ in rows)
    print(f"{'step':<{width}}  {'best':>7}  {'median':>7}")
    print(f"{'-' * width}  {'-' * 7}  {'-' * 7}")
    for name, times in rows:
        print(f"{name:<{width}}  {min(times):7.3f}  {statistics.median(times):7.3f}")


if __name__ == "__main__":
    main()
