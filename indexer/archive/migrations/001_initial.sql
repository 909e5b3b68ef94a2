-- Recordings: one row per file (path), indexed or failed.
CREATE TABLE recordings (
    id BIGINT PRIMARY KEY,
    path VARCHAR NOT NULL UNIQUE,
    file_name VARCHAR NOT NULL,
    content_hash VARCHAR,
    size_bytes BIGINT,
    mtime DOUBLE,
    duration_s DOUBLE,
    sample_rate INTEGER,
    channels INTEGER,
    format VARCHAR,
    decoder VARCHAR,
    status VARCHAR NOT NULL,          -- 'indexed' | 'failed'
    error_kind VARCHAR,
    error VARCHAR,
    peak DOUBLE,
    rms_db DOUBLE,
    clipped_fraction DOUBLE,
    silent_fraction DOUBLE,
    is_silent BOOLEAN,
    is_clipped BOOLEAN,
    indexed_at TIMESTAMP NOT NULL
);

-- Windows: one row per embedded window; its id is the vector's id in the FAISS index.
CREATE TABLE windows (
    id BIGINT PRIMARY KEY,
    recording_id BIGINT NOT NULL,
    channel SMALLINT NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    rms_db DOUBLE,
    peak DOUBLE,
    clipped_fraction DOUBLE,
    silent_fraction DOUBLE,
    embedding FLOAT[] NOT NULL
);

-- Counters the engine keeps in the same transactions as the data they describe.
CREATE TABLE state (
    key VARCHAR PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO state VALUES ('generation', 0);

-- User metadata from --metadata CSVs: _path (absolute) or _name (file name) joins a recording.
CREATE TABLE metadata (
    _path VARCHAR,
    _name VARCHAR
);
