"""Turning recordings into stored vectors: the incremental, resumable indexing run with its
decoding process, and one file embedded window by window for classify and query by example."""
