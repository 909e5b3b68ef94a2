-- Vectors leave the catalog: they are stored once, as float16 rows in the segment files under
-- vectors/ (written by the Python step of this migration before this runs; see
-- indexer/archive/vector_migration.py). Window ids stay the vectors' ids. The table is remade
-- rather than altered, because DuckDB cannot drop a column of a table with an index.
CREATE TABLE windows_without_vectors (
    id BIGINT PRIMARY KEY,
    recording_id BIGINT NOT NULL,
    channel SMALLINT NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    rms_db DOUBLE,
    peak DOUBLE,
    clipped_fraction DOUBLE,
    silent_fraction DOUBLE
);
INSERT INTO windows_without_vectors
    SELECT id, recording_id, channel, start_s, end_s, rms_db, peak, clipped_fraction, silent_fraction
    FROM windows ORDER BY id;
DROP TABLE windows;
ALTER TABLE windows_without_vectors RENAME TO windows;

-- Windows whose rows in the segment files no longer count (their recording was replaced or
-- deleted); compaction may reclaim them.
CREATE TABLE dead_windows (
    id BIGINT PRIMARY KEY
);
