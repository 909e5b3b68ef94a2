"""Audit: a label set run over every recording; its counts, score spread, flagged calls, history."""

from pathlib import Path

import streamlit as st

from indexer.audit import saved_runs as audit_runs
from indexer.audit.labelset import MODES, inline_labelset
from indexer.audit.labelset_yaml import parse_labelset
from indexer.audit.explain import unflagged_labels
from indexer.audit.runner import run_audit
from search_app import cached, marking, plots, state, widgets

TEMPLATE = """name: my audit
mode: multi-label
threshold: top 5%
labels:
  - complaint
  - hold music but not speech
"""


MARK_ROWS = 50  # flagged recordings offered for marking (best score first)


def run_label(run_id: int) -> str:
    run = by_id[run_id]
    return f"#{run.id} {run.name} ({run.created_at:%Y-%m-%d %H:%M})"


st.title("Audit")
archive = widgets.require_archive()
catalog = archive.catalog

with st.expander("Run an audit", expanded=not audit_runs.list_runs(catalog)):
    source = st.radio("Label set", ["Saved", "Write YAML", "Quick list"], horizontal=True, key="source")
    build = None
    with widgets.shown_errors():
        if source == "Saved" and not state.labelset_files():
            st.info("No saved label sets: put *.yaml files in data/labelsets/ or in the archive folder.")
        elif source == "Saved":
            files = state.labelset_files()
            path = st.selectbox("Saved label set", files, format_func=lambda p: f"{p.name} ({p.parent})", key="saved")
            text = Path(path).read_text(encoding="utf-8")
            st.code(text, language="yaml")
            build = lambda: parse_labelset(text, origin=Path(path).name)  # noqa: E731
        elif source == "Write YAML":
            text = st.text_area("Label set (YAML, see data/labelsets/README.md)", TEMPLATE, height=220, key="yaml")
            build = lambda: parse_labelset(text, origin="your label set")  # noqa: E731
        else:
            labels = st.text_input("Labels, comma-separated", "complaint, hold music but not speech", key="quick")
            mode = st.selectbox("Mode", MODES, index=1, key="quick_mode")
            threshold = st.text_input("Threshold (a cosine score or “top 5%”)", "top 5%", key="quick_threshold")
            build = lambda: inline_labelset(labels, mode=mode, threshold=threshold)  # noqa: E731
        if st.button("Run audit", type="primary", key="run", disabled=build is None):
            labelset = build()
            with st.spinner(f"Scoring every window against {len(labelset.labels)} labels…"), state.writable_archive() as writable:
                st.session_state.run_choice = run_audit(writable, labelset).id
            st.rerun()

runs = audit_runs.list_runs(catalog)[::-1]
by_id = {r.id: r for r in runs}
if not runs:
    st.info("No audit runs yet: run one above.")
    st.stop()
run = by_id[st.selectbox("Audit run", list(by_id), format_func=run_label, key="run_choice")]

st.subheader("Flagged recordings per label")
counts = audit_runs.label_counts(catalog, run.id)
st.dataframe(
    [{"label": c.label, "flagged recordings": c.flagged_recordings, "flagged minutes": round(c.flagged_seconds / 60, 1),
      "best score": round(c.best_score, 4)} for c in counts],
    hide_index=True,
)  # fmt: skip
learned = "".join(f" · learned “{name}” version {version}" for name, version in run.learned_versions.items())
st.caption(f"{run.mode} · model {run.model_id} · {run.windows_scored:,} windows scored in {run.seconds:.1f} s{learned}")

st.subheader("Where the threshold falls")
label = st.selectbox("Label", run.labels, key="label")
spread = audit_runs.score_spread(catalog, run.id, label)
if not len(spread.scores):
    st.info("This run scored no recordings.")
else:
    low = round(float(min(spread.scores.min(), spread.threshold)) - 0.01, 3)
    high = round(float(max(spread.scores.max(), spread.threshold)) + 0.01, 3)
    value = st.slider("Threshold", low, high, round(spread.threshold, 3), step=0.001, format="%.3f",
                      key=f"threshold_{run.id}_{label}")
    st.pyplot(plots.histogram_figure(spread.scores, value, label))
    at_or_below = spread.percentile(value)
    st.caption(
        f"A threshold of {value:.3f} sits at the {at_or_below:.1f}th percentile: {spread.at_or_above(value)} of "
        f"{len(spread.scores)} recordings score at or above it (the top {100 - at_or_below:.1f}%)."
    )

st.subheader("Flagged recordings")
flagged = audit_runs.results(catalog, run.id).to_pandas(integer_object_nulls=True)
unflagged = unflagged_labels(catalog, run.id)
if unflagged:  # why, in plain text (label names are the user's)
    st.info("Nothing was flagged in this run, and why:" if flagged.empty else "Labels that flagged nothing, and why:")
    st.text("\n".join(u.reason for u in unflagged))
if not flagged.empty:
    marks = marking.flagged_marks(archive, list(flagged.label), [int(w) for w in flagged.best_window_id])
    table = widgets.flagged_rows(flagged, marks or None)
    st.dataframe(table, hide_index=True, column_config=widgets.column_widths(table))
    row = flagged.iloc[st.selectbox(
        "Listen to", range(len(flagged)), key="flagged_pick",
        format_func=lambda i: f"{Path(flagged.file[i]).name}: {flagged.label[i]} at {flagged.best_start_s[i]:.1f} s",
    )]  # fmt: skip
    widgets.play_span(archive, int(row.recording_id), float(row.best_start_s), float(row.best_end_s), int(row.channel))
    with st.expander("Mark flagged recordings right or wrong (each label learns from its marks)"):
        for i in range(min(len(flagged), MARK_ROWS)):
            window_id, label = int(flagged.best_window_id[i]), str(flagged.label[i])
            marking.verdict_buttons(window_id, label, f"{Path(flagged.file[i]).name}: {label} at {flagged.best_start_s[i]:.1f} s",
                                    key=f"flag_mark_{i}", current=marks.get((label, window_id)))
        marking.marks_status(str(row.label), key="flag_mark")
st.download_button("Download CSV", cached.export_csv(archive, run.id, run.updated_at), f"audit-{run.id}.csv",
                   "text/csv", key="download")

st.subheader("History")
st.dataframe(
    [{"run": r.id, "name": r.name, "mode": r.mode, "labels": len(r.labels), "windows": r.windows_scored,
      "standing": r.standing, "created": r.created_at} for r in runs],
    hide_index=True,
)  # fmt: skip
if len(runs) >= 2:
    st.subheader("Compare two runs")
    left, right = st.columns(2)
    newest = runs[0].id  # keyed by the newest run: after a new run the pair starts as it against the one before
    before = left.selectbox("Before", list(by_id), index=1, format_func=run_label, key=f"diff_a_{newest}")
    after = right.selectbox("After", list(by_id), index=0, format_func=run_label, key=f"diff_b_{newest}")
    with widgets.shown_errors():
        diff = audit_runs.diff(catalog, before, after)
    st.dataframe(widgets.diff_counts(diff.counts), hide_index=True)
    if not diff.same_scope:
        st.caption(f"Compared over the {diff.compared:,} recordings both runs scored (before: {diff.scored_a:,}, "
                   f"after: {diff.scored_b:,}).")
    if any(x is None or y is None for _, x, y in diff.counts):
        st.caption("None: a label that run did not have.")
    newly, cleared = st.columns(2)
    newly.markdown(f"**Newly flagged** ({len(diff.newly_flagged)})")
    newly.dataframe(widgets.diff_rows(diff.newly_flagged), hide_index=True)
    cleared.markdown(f"**Cleared** ({len(diff.cleared)})")
    cleared.dataframe(widgets.diff_rows(diff.cleared), hide_index=True)
