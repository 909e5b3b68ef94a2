"""The archive on disk: the DuckDB catalog and its migrations, the vector index, the manifest,
remembered text vectors and the writer lock. Knows no model and no engine job."""
