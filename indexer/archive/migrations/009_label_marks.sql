-- Marks: an analyst's verdict on one window for one label. A mark is keyed by what the window
-- is (its recording's content hash, channel and start), not by its id, so a file re-indexed
-- with other ids, moved or copied keeps its marks wherever the same content is found again.
CREATE TABLE label_marks (
    label_key VARCHAR NOT NULL,        -- the label's matching form (NFKC, case-folded)
    label VARCHAR NOT NULL,            -- as first written
    content_hash VARCHAR NOT NULL,
    channel SMALLINT NOT NULL,
    start_s DOUBLE NOT NULL,
    positive BOOLEAN NOT NULL,
    marked_window_id BIGINT NOT NULL,  -- the window as it was marked (reports of marks whose audio is gone)
    note VARCHAR,
    marked_at TIMESTAMP NOT NULL,
    PRIMARY KEY (label_key, content_hash, channel, start_s)
);

-- Each fit of a learned label: a linear scorer over the stored vectors, numbered per label.
CREATE TABLE learned_labels (
    label_key VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    label VARCHAR NOT NULL,
    weights FLOAT[] NOT NULL,          -- score(x) = <x, weights> + bias; sigmoid gives the probability
    bias DOUBLE NOT NULL,
    marks_hash VARCHAR NOT NULL,       -- which marks it learned from
    positives INTEGER NOT NULL,
    negatives INTEGER NOT NULL,
    weak_negatives INTEGER NOT NULL,
    report_json VARCHAR NOT NULL,      -- cross-validated figures, learned and text alone
    model_id VARCHAR NOT NULL,
    model_revision VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (label_key, version)
);
