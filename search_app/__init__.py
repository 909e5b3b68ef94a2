"""soundtrace's Streamlit front end (the app lands with its own issue); all logic lives in ``indexer``."""
