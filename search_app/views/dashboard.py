"""Dashboard: how many recordings an audit flagged per label, over time and by a metadata column."""

import streamlit as st

from indexer.audit import runs as audit_runs
from indexer.audit.runs import PERIODS
from indexer.search.filtering import date_column
from search_app import widgets

st.title("Dashboard")
archive = widgets.require_archive()
catalog = archive.catalog

runs = {r.id: r for r in reversed(audit_runs.list_runs(catalog))}
if not runs:
    st.info("No audit runs yet: run one on the Audit page.")
    st.stop()
run = runs[st.selectbox("Audit run", list(runs), format_func=lambda i: f"#{i} {runs[i].name}", key="run")]

st.subheader("Flagged recordings over time")
period = st.radio("Per", PERIODS, horizontal=True, key="period")
dated_by = date_column(catalog.view_columns(), catalog.metadata_columns())
with widgets.shown_errors():
    over_time = audit_runs.flagged_over_time(catalog, run.id, period).to_pandas()
if over_time.empty:
    st.info(f"No recording in this run has a {dated_by}.")
else:
    st.line_chart(over_time, x="period", y="flagged", color="label")
    st.caption(f"Dated by the {'file modification time' if dated_by == 'modified_at' else f'metadata column {dated_by}'}.")

st.subheader("Flagged recordings by column")
columns = catalog.metadata_columns() + ["format", "channels", "is_clipped", "is_silent"]
column = st.selectbox("Column", columns, key="column")
with widgets.shown_errors():
    by_value = audit_runs.flagged_by(catalog, run.id, column).to_pandas()
st.bar_chart(by_value, x="value", y="flagged", color="label")
st.dataframe(by_value.pivot_table(index="value", columns="label", values="flagged", aggfunc="sum"))
