-- Which version of each learned label an audit run scored with (JSON: label -> version); a
-- standing run records the newest it used when it was last extended.
ALTER TABLE audit_runs ADD COLUMN learned_versions VARCHAR DEFAULT '{}';
