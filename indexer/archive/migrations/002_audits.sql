-- Audit runs: a label set scored against the archive, kept so dashboards and exports read it back.
CREATE TABLE audit_runs (
    id BIGINT PRIMARY KEY,
    name VARCHAR NOT NULL,
    labelset_source VARCHAR NOT NULL,   -- the label set exactly as given
    labelset_json VARCHAR NOT NULL,     -- its parsed, canonical form
    labelset_hash VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    labels VARCHAR[] NOT NULL,
    model_id VARCHAR NOT NULL,
    model_revision VARCHAR NOT NULL,
    filters VARCHAR NOT NULL,           -- JSON: where, since, until, date_column
    windows_scored BIGINT NOT NULL,
    archive_windows BIGINT NOT NULL,    -- the archive's state when the run was made or last extended
    archive_generation BIGINT NOT NULL,
    standing BOOLEAN NOT NULL,          -- extended after each indexing run (audit watch / index --audit)
    seconds DOUBLE NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- One row per (run, recording, label).
CREATE TABLE audit_results (
    run_id BIGINT NOT NULL,
    recording_id BIGINT NOT NULL,
    label VARCHAR NOT NULL,
    score DOUBLE NOT NULL,              -- best adjusted cosine over the recording's windows
    probability DOUBLE NOT NULL,        -- softmax over the label set at that window (CLAP's logit scale)
    confidence DOUBLE NOT NULL,         -- p / (p + p_strongest_rival) at that window
    percentile DOUBLE NOT NULL,         -- where the score falls among all recordings' best scores for the label
    best_window_id BIGINT NOT NULL,
    best_start_s DOUBLE NOT NULL,
    best_end_s DOUBLE NOT NULL,
    channel SMALLINT NOT NULL,
    flagged_windows INTEGER NOT NULL,
    flagged_seconds DOUBLE NOT NULL,
    flagged BOOLEAN NOT NULL,
    is_best BOOLEAN NOT NULL,           -- the recording's highest-scoring label
    PRIMARY KEY (run_id, recording_id, label)
);
