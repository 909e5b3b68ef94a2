-- Which metadata row is each recording's, resolved once: recording_metadata (one row per
-- recording that has metadata, keyed by _recording_id) is (re)built with recordings_view after
-- every migration and every metadata import, and kept up to date as recordings are written, so
-- the view joins on the recording id instead of matching paths and names at every query.
CREATE TABLE IF NOT EXISTS recording_metadata (_recording_id BIGINT);
