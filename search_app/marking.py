"""✓ / ✗ beside hits and flagged recordings: an analyst's verdicts become marks of a label
(``indexer.learning``), and the label can be learned from them right there."""

from __future__ import annotations

import streamlit as st

from indexer.api import Archive
from indexer.errors import SoundtraceError
from indexer.learning.learned import learn_label
from indexer.learning.marks import label_summary, mark_windows, window_marks
from indexer.learning.suggest import suggest_windows

from . import state
from .widgets import MARK_SIGNS


def verdict_buttons(window_id: int, label: str, described: str, key: str, current: bool | None = None) -> None:
    """One row: what it is and its mark so far, then ✓ (the label is there) and ✗ (it is not); the
    button of the current verdict is the highlighted one."""
    text, right, wrong = st.columns([8, 1, 1])
    text.write(described + ("" if current is None else f" · marked {MARK_SIGNS[current]}"))
    right.button("✓", key=f"{key}_yes_{window_id}", on_click=_mark, args=(label, window_id, True),
                 help=f"Right: “{label}” is in this window", disabled=not label, type="primary" if current is True else "secondary")
    wrong.button("✗", key=f"{key}_no_{window_id}", on_click=_mark, args=(label, window_id, False),
                 help=f"Wrong: “{label}” is not in this window", disabled=not label, type="primary" if current is False else "secondary")


def current_marks(archive: Archive, label: str, window_ids: list[int]) -> dict[int, bool]:
    """The label's ✓ / ✗ on these windows (none for a label that is not a label name yet)."""
    if not label:
        return {}
    try:
        return window_marks(archive, label, window_ids)
    except SoundtraceError:  # punctuation only: no label, so no marks
        return {}


def flagged_marks(archive: Archive, labels: list[str], window_ids: list[int]) -> dict[tuple[str, int], bool]:
    """Each flagged row's mark for its own label, by (label, window id)."""
    marks = {}
    for label in dict.fromkeys(labels):
        chosen = [w for name, w in zip(labels, window_ids) if name == label]
        marks.update({(label, w): verdict for w, verdict in current_marks(archive, label, chosen).items()})
    return marks


def search_learned(label: str) -> None:
    """A button's callback: the Search page ranks by the learned label (its words cleared)."""
    st.session_state.learned, st.session_state.text, st.session_state.like_window = label, "", None


def marks_status(label: str, key: str, on_search_page: bool = False) -> None:
    """What the last click did, the label's marks so far, a button that learns from them, and once
    learned, one that searches by it."""
    if message := st.session_state.pop("mark_message", None):
        (st.error if message.startswith("!") else st.success)(message.lstrip("!"))
    if not label:
        return
    try:
        summary = label_summary(state.archive(), label)
    except SoundtraceError:  # not a label name (punctuation only): nothing to show yet
        return
    if summary is None:
        st.caption(f"No marks for “{label}” yet: ✓ the hits that are right, ✗ those that are wrong.")
        return
    st.caption(f"“{summary.label}”: {summary.positives} ✓, {summary.negatives} ✗, {summary.versions} learned version(s).")
    st.button(f"Learn “{summary.label}” from its marks", key=f"{key}_learn", on_click=_learn, args=(summary.label,))
    if report := st.session_state.pop("learn_report", None):
        st.info(report)
    if summary.versions and st.button(f"Search by the learned “{summary.label}”", key=f"{key}_search_learned",
                                      on_click=search_learned, args=(summary.label,),
                                      help="Rank the archive by its newest version, on the Search page."):
        if not on_search_page:
            st.switch_page("views/search.py")


def suggestions(label: str, key: str, k: int = 10) -> None:
    """Unmarked windows where a verdict teaches the label most, one per recording, each with ✓ / ✗."""
    try:
        found = suggest_windows(state.archive(), label, k)
    except SoundtraceError as exc:
        st.error(str(exc))
        return
    if not found:
        st.caption("Nothing to propose: the archive holds no unmarked window.")
    for s in found:
        why = "scores high" if s.reason == "top" else "the scorer is unsure"
        verdict_buttons(s.window_id, label, f"{s.path.rsplit('/', 1)[-1]} at {s.start_s:.1f}–{s.end_s:.1f} s ({why}, {s.score:.3f})",
                        key=key)


def _mark(label: str, window_id: int, positive: bool) -> None:
    """A button's callback: Streamlit runs it before the page, so it takes the page lock itself."""
    try:
        with state.page_run(), state.writable_archive() as archive:
            mark_windows(archive, label, [window_id], positive)
        st.session_state.mark_message = f"Marked window {window_id} {'✓' if positive else '✗'} for “{label}”."
    except SoundtraceError as exc:
        st.session_state.mark_message = f"!{exc}"


def _learn(label: str) -> None:
    try:
        with state.page_run(), state.writable_archive() as archive:
            learned = learn_label(archive, label).learned
    except SoundtraceError as exc:
        st.session_state.mark_message = f"!{exc}"
        return
    e = learned.evaluation
    figures = ("" if e is None or e.folds == 0 else
               f" Cross-validated ROC-AUC {e.roc_auc:.2f} (text alone {_f(e.text_roc_auc)}), "
               f"precision at 10 {e.precision_at_10:.2f} (text alone {_f(e.text_precision_at_10)}).")
    st.session_state.learn_report = (f"“{learned.label}” version {learned.version}: {learned.positives} ✓, "
                                     f"{learned.negatives} ✗.{figures} Search by it right here (the button below, or “…or rank by a "
                                     f"learned label” on the Search page), or with `soundtrace search --label`.")


def _f(value) -> str:
    return "-" if value is None else f"{value:.2f}"
