"""The catalog's schema migrations: numbered SQL files, some with a Python step that moves or
records what lives outside the catalog (the vector files), each applied in its own transaction."""

from __future__ import annotations

from importlib import resources

import numpy as np

VECTORS_OUT_VERSION = 6
"""The migration that moved vectors out of ``windows.embedding`` into segment files."""
CHECKSUMS_VERSION = 12
"""The migration after which the catalog records every segment chunk's CRC and the ANN's file."""
RESULTS_OUT_VERSION = 13
"""The migration that moved audit runs' rows out of ``audit_results`` into Parquet files."""


def migration_files() -> list[tuple[int, str]]:
    folder = resources.files("indexer.archive") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def latest_version() -> int:
    return max(version for version, _ in migration_files())


def migrate(catalog) -> None:
    """Apply numbered migrations not yet applied to ``catalog``, each in its own transaction (006's
    and 013's Python steps before it, which must be safe to repeat; 012's inside it)."""
    con = catalog.con
    con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    current = catalog.schema_version()
    directory = None if catalog.path is None else catalog.path.parent
    for version, sql in migration_files():
        if version <= current:
            continue
        dead = _vectors_out(con, directory) if version == VECTORS_OUT_VERSION else None
        results = _results_out(con, directory) if version == RESULTS_OUT_VERSION else []
        with catalog.transaction():
            con.execute(sql)
            if dead is not None and len(dead):
                catalog.mark_dead(dead)
            for run_id, files in results:
                catalog.name_run_files(run_id, files)
            if version == CHECKSUMS_VERSION and directory is not None:
                from indexer.archive.vector_migration import record_checksums

                record_checksums(con, directory)
            con.execute("INSERT INTO schema_migrations VALUES (?, now())", [version])
            catalog._refresh_view()


def _vectors_out(con, directory) -> np.ndarray:
    """Migration 006's Python step: the vectors move to segment files (an in-memory catalog has none)."""
    if directory is None:
        return np.empty(0, np.int64)
    from indexer.archive.vector_migration import move_vectors

    return move_vectors(con, directory)


def _results_out(con, directory) -> list:
    """Migration 013's Python step: each run's rows into files no one names until the migration
    commits (a migration killed before that leaves orphans, removed by the next save)."""
    from indexer.archive.run_files import RunFiles

    run_ids = [row[0] for row in con.execute(  # a run that scored no recording has no rows: an empty file
        "SELECT run_id FROM audit_results UNION SELECT id FROM audit_runs ORDER BY 1").fetchall()]
    if directory is None or not run_ids:
        return []
    files = RunFiles(directory)
    return [(run_id, files.write(run_id, con.sql(
        "SELECT run_id, recording_id, label, CAST(score AS FLOAT) AS score, CAST(probability AS FLOAT) AS probability,"
        " CAST(confidence AS FLOAT) AS confidence, percentile, best_window_id, best_start_s, best_end_s, channel,"
        " flagged_windows, flagged_seconds, flagged, is_best FROM audit_results WHERE run_id = ? ORDER BY recording_id,"
        " list_position((SELECT labels FROM audit_runs WHERE id = ?), label), label", params=[run_id, run_id]).to_arrow_table()))
        for run_id in run_ids]
