"""An audit run's result rows: the table a run writes to its files, and SQL over them.

The rows live in Parquet files the catalog names (``archive.run_files``); a query names the runs
it reads and gets them as ``audit_results`` in its WITH clause, so the SQL reads as it did when
they were a catalog table.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from indexer.archive.catalog import Catalog
from indexer.audit.scoring import AuditScores
from indexer.errors import ArchiveDamagedError

RESULT_COLUMNS = (
    "run_id, recording_id, label, CAST(score AS DOUBLE) AS score, CAST(probability AS DOUBLE) AS probability,"
    " CAST(confidence AS DOUBLE) AS confidence, percentile, best_window_id, best_start_s, best_end_s, channel,"
    " flagged_windows, flagged_seconds, flagged, is_best"
)
"""The rows as SQL sees them: scores were float32 before they were stored, so they are stored as such."""


def results_cte(catalog: Catalog, run_ids: list[int]) -> tuple[str, list]:
    """``audit_results AS (...)``: the rows of ``run_ids`` read from their files, for a WITH
    clause, and its parameter (the files, each checked to be there at its size)."""
    paths = catalog.run_files.paths(catalog.run_file_records(run_ids))
    return f"audit_results AS (SELECT {RESULT_COLUMNS} FROM read_parquet(?))", [paths]


def rows_query(catalog: Catalog, run_ids: list[int], sql: str, params: list | None = None, fetch: str = "all"):
    """``sql`` (which reads ``audit_results``, or starts ``WITH`` more of its own) over the rows of
    ``run_ids``, fetched as ``fetch`` says ("all", "numpy" or "arrow"); damage to their files is an
    ArchiveDamagedError naming the problem."""
    cte, files = results_cte(catalog, run_ids)
    sql = f"WITH {cte}, {sql.removeprefix('WITH ')}" if sql.startswith("WITH ") else f"WITH {cte} {sql}"
    try:
        result = catalog.con.sql(sql, params=files + list(params or []))
        return {"all": result.fetchall, "numpy": result.fetchnumpy, "arrow": result.to_arrow_table}[fetch]()
    except (duckdb.InvalidInputException, duckdb.IOException) as exc:  # a file altered within its size
        raise ArchiveDamagedError(f"An audit run's results file cannot be read ({str(exc).splitlines()[0][:200]});"
                                  " run `soundtrace check`.") from None


def result_table(run_id: int, s: AuditScores) -> pa.Table:
    """One row per (recording, label), recording-major, in the files' schema."""
    n_rec, n_lab = s.score.shape
    flat = lambda a, kind: np.ascontiguousarray(a, kind).reshape(-1)  # noqa: E731 — row-major (recording, label)
    return pa.table({
        "run_id": pa.array(np.full(n_rec * n_lab, run_id, np.int64)),
        "recording_id": pa.array(np.repeat(np.asarray(s.recording_ids, np.int64), n_lab)),
        "label": pa.DictionaryArray.from_arrays(  # no Python string per row
            pa.array(np.tile(np.arange(n_lab, dtype=np.int32), n_rec)), pa.array(list(s.labels), pa.string())
        ),
        "score": pa.array(flat(s.score, np.float32)),
        "probability": pa.array(flat(s.probability, np.float32)),
        "confidence": pa.array(flat(s.confidence, np.float32)),
        "percentile": pa.array(flat(s.percentile, np.float64)),
        "best_window_id": pa.array(flat(s.best_window, np.int64)),
        "best_start_s": pa.array(flat(s.best_start_s, np.float64)),
        "best_end_s": pa.array(flat(s.best_end_s, np.float64)),
        "channel": pa.array(flat(s.channel, np.int16)),
        "flagged_windows": pa.array(flat(s.flagged_windows, np.int32)),
        "flagged_seconds": pa.array(flat(s.flagged_seconds, np.float64)),
        "flagged": pa.array(flat(s.flagged, bool)),
        "is_best": pa.array(flat(s.is_best, bool)),
    })
