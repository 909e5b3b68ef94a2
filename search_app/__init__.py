"""soundtrace's Streamlit front end: pages over the ``indexer`` engine, which holds all the logic.

Run it with ``soundtrace app`` (or the argv from :func:`search_app.launch.command`).
"""
