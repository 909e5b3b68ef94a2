-- An audit run's result rows move out of the catalog into Parquet files it names
-- (archive/run_files.py): saving the 1.67M rows of a run over a million windows was 0.4-0.5 s of
-- DuckDB insert, a third of that as files. Migration 013's Python step writes the rows of the runs
-- made before into files first; this records them and drops the table, in one transaction.
CREATE TABLE audit_run_files (
    run_id BIGINT NOT NULL,
    part INTEGER NOT NULL,
    name VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    crc32 BIGINT NOT NULL
);
DROP TABLE audit_results;
