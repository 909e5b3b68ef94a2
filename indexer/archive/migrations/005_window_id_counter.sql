-- Window ids are never reused from here on (they were max(id) + 1, so replacing the newest
-- recording gave its new windows the old ids). A FAISS file written since can then be brought up
-- to date from the catalog by its ids alone: ids it holds that the catalog still has are the same
-- vectors. 'ids_unique_since' is the generation from which that holds.
INSERT INTO state SELECT 'next_window_id', coalesce(max(id), 0) + 1 FROM windows;
INSERT INTO state SELECT 'ids_unique_since', value FROM state WHERE key = 'generation';
