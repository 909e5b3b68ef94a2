-- Segment files a committed compaction (archive/compaction.py) replaced and has yet to remove:
-- named here by the new catalog, so that a compaction killed right after its commit leaves work
-- the next writer finishes, not stray files.
CREATE TABLE compaction_leftovers (
    name VARCHAR PRIMARY KEY
);
