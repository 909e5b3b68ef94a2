"""Audits: label sets (YAML or inline) and the label language, full-archive scoring, saved and
standing runs, exports and diffs."""
