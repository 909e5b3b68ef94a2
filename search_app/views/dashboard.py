"""Dashboard: how many recordings an audit flagged per label, over time and by a metadata column."""

import streamlit as st

from indexer.audit import saved_runs as audit_runs
from indexer.audit.saved_runs import PERIODS
from indexer.search.filtering import date_column
from search_app import charts, widgets

st.title("Dashboard")
archive = widgets.require_archive()
catalog = archive.catalog

runs = {r.id: r for r in reversed(audit_runs.list_runs(catalog))}
if not runs:
    st.info("No audit runs yet: run one on the Audit page.")
    st.stop()
run = runs[st.selectbox("Audit run", list(runs), format_func=lambda i: f"#{i} {runs[i].name}", key="run")]
measure = st.radio("Show", list(charts.MEASURES), format_func=charts.MEASURES.get, horizontal=True, key="measure")

scored, flagged_any = audit_runs.recordings_flagged(catalog, run.id)
recordings, flagged, share = st.columns(3)
recordings.metric("Recordings scored", f"{scored:,}")
flagged.metric("Flagged for any label", f"{flagged_any:,}")
share.metric("Share flagged", f"{flagged_any / scored:.1%}" if scored else "—")

st.subheader("Flagged recordings over time")
period = st.radio("Per", PERIODS, horizontal=True, key="period")
dated_by = date_column(catalog.filter_columns(), catalog.metadata_columns())
with widgets.shown_errors():
    over_time = audit_runs.flagged_over_time(catalog, run.id, period).to_pandas()
if over_time.empty:
    st.info(f"No recording in this run has a {dated_by}.")
else:
    st.altair_chart(charts.over_time(over_time, period, measure), width="stretch")
    st.caption(f"Dated by the {'file modification time' if dated_by == 'modified_at' else f'metadata column {dated_by}'}.")

st.subheader("Flagged recordings by column")
columns = catalog.metadata_columns() + ["format", "channels", "is_clipped", "is_silent"]
column = st.selectbox("Column", columns, key="column")
with widgets.shown_errors():
    by_value = audit_runs.flagged_by(catalog, run.id, column).to_pandas()
st.altair_chart(charts.by_value(by_value, column, measure), width="stretch")
st.dataframe(charts.value_table(by_value))
