-- Which version of each learned label an audit run scored with (JSON: label -> version), and the
-- thresholds those versions gave labels that have none of their own (JSON: label -> cosine); a
-- standing run records the newest it used when it was last extended.
ALTER TABLE audit_runs ADD COLUMN learned_versions VARCHAR DEFAULT '{}';
ALTER TABLE audit_runs ADD COLUMN learned_thresholds VARCHAR DEFAULT '{}';
