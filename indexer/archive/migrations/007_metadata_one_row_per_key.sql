-- One metadata row per key (_path or _name), so recordings_view joins on equality alone; a
-- CSV that named a recording twice left two rows, of which the view showed either.
CREATE OR REPLACE TABLE metadata AS
    SELECT * FROM metadata QUALIFY row_number() OVER (PARTITION BY _path, _name) = 1;
