"""The app's entry point: one navigation over the pages, each a script in ``views/``.

Not ``pages/``: a folder of that name puts Streamlit in its legacy multipage mode, which runs
page scripts without this file (and so without the guards below).

Every page runs inside ``state.page_run`` (the archive lets go of its lock between runs) and
``widgets.shown_errors`` (an engine error anywhere becomes one message, never a traceback).
"""

import streamlit as st

from search_app import state, widgets

st.set_page_config(page_title="soundtrace", page_icon="🔎", layout="wide")
page = st.navigation(
    [
        st.Page("views/search.py", title="Search", icon=":material/search:", default=True),
        st.Page("views/audit.py", title="Audit", icon=":material/fact_check:"),
        st.Page("views/dashboard.py", title="Dashboard", icon=":material/monitoring:"),
        st.Page("views/classify.py", title="Classify", icon=":material/label:"),
        st.Page("views/library.py", title="Library", icon=":material/library_music:"),
    ]
)
with state.page_run(), widgets.shown_errors():
    page.run()
