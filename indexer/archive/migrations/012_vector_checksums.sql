-- The catalog says which segment files exist and what their rows hold: a CRC-32 of every chunk of
-- 1,024 rows, recorded in the transaction that commits the rows (filled for an existing archive
-- by this migration's Python step, indexer/archive/vector_migration.py, from the files as they are).
CREATE TABLE vector_chunks (
    first_id BIGINT PRIMARY KEY,
    segment BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    crc32 BIGINT NOT NULL
);
-- The ANN index in force: its file, size and CRC-32 and its record (JSON of AnnRecord), swapped in
-- by one transaction after the file is written; ann.json beside the vectors is no longer read.
CREATE TABLE ann_index (
    id INTEGER PRIMARY KEY,
    file VARCHAR NOT NULL,
    bytes BIGINT NOT NULL,
    crc32 BIGINT NOT NULL,
    record VARCHAR NOT NULL
);
