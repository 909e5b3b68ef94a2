"""Search: words, an example clip or a learned label in, recordings out, ten at a time, each playable at its hit."""

from contextlib import nullcontext

import streamlit as st

from indexer.learning.marks import newest_versions
from indexer.search.facets import filter_facets, picks_from_choices
from indexer.search.filtering import SearchFilters
from indexer.search.ranking import search_vector
from search_app import cached, marking, widgets

PAGE_SIZE = 10
FLAG_FILTERS = {"is_silent": "Leave out silent recordings", "is_clipped": "Leave out clipped recordings"}


def more_like(window_id: int, described: str) -> None:
    st.session_state.like_window, st.session_state.like_described = window_id, described


def forget_like() -> None:
    st.session_state.like_window = None


def words_typed() -> None:
    """New words (or a new example clip) replace a learned label being searched."""
    st.session_state.like_window, st.session_state.learned = None, ""


def learned_picked() -> None:
    """A learned label replaces the words (so the box never shows words that are not searched)."""
    st.session_state.like_window, st.session_state.text = None, ""


def turn_page(step: int) -> None:
    st.session_state.page = max(0, st.session_state.get("page", 0) + step)


st.title("Search")
archive = widgets.require_archive()
if archive.catalog.window_count() == 0:
    st.info(
        f"The archive at {archive.directory} holds no recordings yet, so there is nothing to search. Fill it with "
        f"`soundtrace index FOLDER --archive {archive.directory}`, then come back."
    )
    st.stop()

text = st.text_input("What are you listening for?", key="text", placeholder="a customer yelling at the agent",
                     on_change=words_typed)
example = st.file_uploader("…or find recordings that sound like an example clip", type=widgets.AUDIO_TYPES,
                           key="example", on_change=words_typed)
with widgets.shown_errors():
    learned_labels = newest_versions(archive)
if st.session_state.get("learned", "") not in ("", *learned_labels):  # a label of another archive
    st.session_state.learned = ""
learned = st.selectbox(
    "…or rank by a learned label", ["", *learned_labels], key="learned", on_change=learned_picked,
    format_func=lambda name: f"{name} (version {learned_labels[name]})" if name else "(none: words or a clip)",
    disabled=not learned_labels,
    help="A label learned from your ✓ / ✗ marks ranks by its newest version, as `soundtrace search --label`."
    if learned_labels else "None yet: mark hits ✓ / ✗ below, then press Learn.",
)

with st.sidebar:
    st.header("Filters")
    with widgets.shown_errors():
        facets = filter_facets(archive.catalog)
    choices, dates = {}, {}
    for facet in facets:
        if facet.kind == "choice":
            choices[facet.column] = st.multiselect(facet.column, facet.choices, key=f"choice_{facet.column}")
        else:
            picked = st.date_input(facet.column, (facet.low, facet.high), facet.low, facet.high, key=f"date_{facet.column}")
            if len(picked) == 2 and tuple(picked) != (facet.low, facet.high):
                dates[facet.column] = tuple(picked)
    leave_out = [column for column, label in FLAG_FILTERS.items() if st.checkbox(label, key=f"flag_{column}")]

with widgets.shown_errors():
    picks = picks_from_choices(archive.catalog.filter_columns(), choices, dates, leave_out)
    like = st.session_state.get("like_window")
    may_load = not archive.encoder_loaded and not learned and (example or text.strip())  # words or a clip, first time
    with st.spinner("Loading the CLAP model…") if may_load else nullcontext():
        query = cached.query(archive, text, (example.getvalue(), example.name) if example else None, like, learned)

if like is not None:
    st.info(f"Showing recordings that sound like {st.session_state.get('like_described', f'window {like}')}.")
    st.button("Back to my search", on_click=forget_like)
if query is None:
    st.info("Type what you are listening for, upload an example clip, or pick a learned label.")
    st.stop()

asked = (query.described, picks)
if st.session_state.get("asked") != asked:
    st.session_state.asked, st.session_state.page = asked, 0
page = st.session_state.get("page", 0)

with widgets.shown_errors():
    hits = search_vector(archive, query.vector, (page + 1) * PAGE_SIZE + 1, SearchFilters(picks=picks), exclude=query.exclude)
shown = hits[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]

st.subheader(f"Recordings {query.described}")
if picks:
    st.caption(f"Filtered by: {picks.describe()}")
if not shown:
    st.warning("No recordings match. Loosen the filters or try other words.")
    st.stop()
mark_key = f"mark_label_{query.label}"  # a new search, a new label to mark as
mark_as = str(st.session_state.get(mark_key, query.label)).strip()
marks = marking.current_marks(archive, mark_as, [hit.best.window_id for hit in shown])
table = widgets.hit_rows(shown, archive.catalog.metadata_columns(), marks or None)  # a mark column once there are marks
st.dataframe(table, hide_index=True, column_config=widgets.column_widths(table))

with st.expander("Mark these hits right or wrong (the label learns from them)"):
    mark_as = st.text_input("Label", query.label, key=mark_key, help="The label your ✓ and ✗ are about.").strip()
    for hit in shown:
        marking.verdict_buttons(hit.best.window_id, mark_as, widgets.hit_label(hit), key="hit_mark",
                                current=marks.get(hit.best.window_id))
    marking.marks_status(mark_as, key="hit_mark", on_search_page=True)
    if mark_as and st.checkbox("Show the windows worth marking next", key="suggest"):
        marking.suggestions(mark_as, key="suggest_mark")

previous, position, following = st.columns([1, 2, 1])
previous.button("◀ Previous", on_click=turn_page, args=(-1,), disabled=page == 0, key="previous")
position.caption(f"Page {page + 1}: results {page * PAGE_SIZE + 1}–{page * PAGE_SIZE + len(shown)}")
following.button("Next ▶", on_click=turn_page, args=(1,), disabled=len(hits) <= (page + 1) * PAGE_SIZE, key="next")

st.subheader("Listen")
chosen = st.selectbox("Hit", range(len(shown)), format_func=lambda i: widgets.hit_label(shown[i]), key="hit")
hit = shown[chosen]
widgets.hit_detail(archive, hit, query.vector)
st.button("More like this", on_click=more_like, args=(hit.best.window_id, widgets.hit_label(hit)), key="more_like")
