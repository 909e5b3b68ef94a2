"""Classify: the origin tool. One uploaded recording, a few labels, no archive needed."""

import streamlit as st

from indexer.config import SAMPLE_RATE
from search_app import cached, plots, state, widgets

st.title("Classify one recording")
st.caption("Upload a recording and type labels in any language; CLAP scores each label against its best window.")

upload = st.file_uploader("Recording", type=widgets.AUDIO_TYPES, key="upload")
labels = st.text_input("Labels, comma-separated", "speech, music, silence, noise", key="labels")
multi = st.toggle("Several labels may apply (multi-label)", key="multi")
threshold = st.slider("Detected at a score of", 0.0, 1.0, 0.3, 0.01, key="threshold") if multi else 0.3
if upload is None:
    st.info("Upload a recording to classify it.")
    st.stop()

with widgets.shown_errors():
    result, samples = cached.classify_upload(state.encoder(), upload.getvalue(), upload.name, labels, multi, threshold)

info = result.info
rate, channels, duration, fmt = st.columns(4)
rate.metric("Sample rate", f"{info.sample_rate:,} Hz")
channels.metric("Channels", info.channels)
duration.metric("Duration", f"{result.duration_s:.1f} s")
fmt.metric("Format", info.format)
for warning in result.warnings:
    st.warning(warning)

st.audio(upload.getvalue(), format=upload.type or None)
top = result.labels[0] if result.labels else None
spot = top.highlight if top and top.highlight else None
st.pyplot(plots.waveform_figure(samples, SAMPLE_RATE, spot or ((top.best_start_s, top.best_end_s) if top else None)))
if spot is not None:
    st.markdown(f"**The {spot[1] - spot[0]:.1f} s that make it “{top.label}”**: {spot[0]:.1f}–{spot[1]:.1f} s")
    with widgets.shown_errors(stop=False):
        st.audio(cached.upload_span(upload.getvalue(), upload.name, *spot), format="audio/wav")
if len(result.labels) == 1:
    st.caption("One label: there is no rival to compare it with, so no probability or confidence; read the score.")
st.dataframe(
    [{"label": s.label, "score": round(s.score, 3),
      "probability": None if s.probability is None else round(s.probability, 3),
      "confidence": s.confidence_level if s.confidence is None else f"{s.confidence:.2f} ({s.confidence_level})",
      "best window": f"{s.best_start_s:.1f}–{s.best_end_s:.1f} s",
      "highlight": f"{s.highlight[0]:.1f}–{s.highlight[1]:.1f} s" if s.highlight else "",
      "detected": s.detected} for s in result.labels],
    hide_index=True,
)  # fmt: skip
