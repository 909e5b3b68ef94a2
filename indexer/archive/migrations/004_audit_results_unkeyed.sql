-- audit_results without its primary key: a run writes one row per (run, recording, label) by
-- construction, and maintaining the key's index was two thirds of the time to save a run over
-- a large archive (1.66M rows for 10 labels over a million windows).
CREATE TABLE audit_results_unkeyed (
    run_id BIGINT NOT NULL,
    recording_id BIGINT NOT NULL,
    label VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    probability DOUBLE NOT NULL,
    confidence DOUBLE NOT NULL,
    percentile DOUBLE NOT NULL,
    best_window_id BIGINT NOT NULL,
    best_start_s DOUBLE NOT NULL,
    best_end_s DOUBLE NOT NULL,
    channel SMALLINT NOT NULL,
    flagged_windows INTEGER NOT NULL,
    flagged_seconds DOUBLE NOT NULL,
    flagged BOOLEAN NOT NULL,
    is_best BOOLEAN NOT NULL
);
INSERT INTO audit_results_unkeyed SELECT * FROM audit_results ORDER BY run_id, recording_id, label;
DROP TABLE audit_results;
ALTER TABLE audit_results_unkeyed RENAME TO audit_results;
