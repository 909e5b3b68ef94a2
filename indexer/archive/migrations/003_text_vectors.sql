-- Text vectors remembered per model and prompt ensemble, so a label set run again (or a standing
-- audit after every indexing run) does not run the text tower again for the same words.
CREATE TABLE text_vectors (
    model_key VARCHAR NOT NULL,   -- model id @ revision
    prompts VARCHAR NOT NULL,     -- the prompt templates, as JSON
    text VARCHAR NOT NULL,
    vector FLOAT[] NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (model_key, prompts, text)
);
