"""Search: queries (words, a clip, a window), ranked recordings with the time of each hit, the
``--where`` allowlist, filters compiled with bound parameters, facets for the app, highlights."""
