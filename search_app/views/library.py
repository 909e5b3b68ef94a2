"""Library: what the archive holds, which files failed and why, and whether indexing is running."""

import pandas as pd
import streamlit as st

from search_app import state, widgets

st.title("Library")
st.caption(f"Archive: `{state.archive_dir()}`")
if not state.archive_exists():
    widgets.no_archive_here()
if state.writer_active():
    st.info("**Indexing in progress.** Another soundtrace process is writing to the archive; what it has "
            "committed so far shows below once it lets readers in (it does so every few seconds).")
else:
    st.success("No indexing run is writing to the archive right now.")
archive = widgets.require_archive()
info = archive.info()

recordings, hours, windows = st.columns(3)
recordings.metric("Recordings", f"{info.recordings:,}")
hours.metric("Hours", f"{info.hours:,.2f}")
windows.metric("Windows", f"{info.windows:,}")
model, index, disk = st.columns(3)
model.metric("Model", info.model_id.rsplit("/", 1)[-1], help=f"{info.model_id} @ {info.revision}")
index.metric("Index", info.index_factory)
disk.metric("On disk", f"{info.disk_bytes / 2**20:,.1f} MiB")
last = f"{info.last_indexed_at:%Y-%m-%d %H:%M}" if info.last_indexed_at else "never"
st.caption(f"{info.window_s:g} s windows every {info.hop_s:g} s · {info.dim}-dimensional vectors · last indexed {last}")
if info.metadata_columns:
    st.caption("Metadata columns: " + ", ".join(info.metadata_columns))

st.subheader(f"Failed files ({info.failed})")
if info.failures:
    failures = pd.DataFrame(
        [{"file": f.path, "kind": f.error_kind, "reason": f.reason} for f in info.failures]
    )
    table = widgets.name_first(failures)
    st.dataframe(table, hide_index=True, column_config={**widgets.column_widths(table),
                                                        "reason": st.column_config.TextColumn(width="large")})
else:
    st.write("None: every file was indexed.")

st.button("Reload the archive", on_click=state.release_archive, key="reload",
          help="Close and reopen it now, to include what an indexing run has added since it was opened.")
