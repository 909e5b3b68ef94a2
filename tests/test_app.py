"""The Streamlit app, page by page, through AppTest against a tiny archive indexed with the tiny CLAP."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from indexer import Archive, EncoderConfig  # noqa: E402
from indexer.audit.runner import run_audit  # noqa: E402
from indexer.model.loading import load_encoder  # noqa: E402
from indexer.audit.labelset import inline_labelset  # noqa: E402
from search_app import launch, state  # noqa: E402
from tests.audio_factory import write_sequence  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "search_app" / "main.py"
SAMPLES = ROOT / "data" / "samples"


@pytest.fixture(scope="module")
def app_archive(tiny_clap_dir, tmp_path_factory) -> Path:
    """Generated tones plus the project's samples, with metadata and one audit run already saved."""
    root = tmp_path_factory.mktemp("app")
    audio = root / "audio"
    write_sequence(audio / "tones_a.wav", [(440, 12), (0, 3), (1000, 10)])
    write_sequence(audio / "tones_b.wav", [(2000, 5)])
    write_sequence(audio / "tones_c.wav", [(300, 4), (5000, 4)])
    encoder = load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu"))
    with Archive.open(root / "archive", encoder=encoder, create=True) as archive:
        archive.index([audio, SAMPLES])
        archive.catalog.import_metadata(ROOT / "data" / "metadata.csv")
        archive.catalog.import_metadata(_shadowing_csv(root))
        run_audit(archive, inline_labelset("tone, noise, speech", mode="multi-label", threshold="top 30%"))
    yield root / "archive"
    state.release_archive()


SHADOWING = ("label", "score", "file", "rank", "confidence", "percentile", "folder", "#", "mark")
"""Metadata columns named like every header of the app's tables: each must show as ``meta.<column>``."""


def _shadowing_csv(folder: Path) -> Path:
    """Metadata for the generated tones only (the samples have none of it, so cells are missing too)."""
    path = folder / "shadowing.csv"
    path.write_text(
        "path," + ",".join(SHADOWING) + "\n"
        "tones_a.wav,dog bark,0.5,elsewhere.wav,7,high,99.5,/elsewhere,x1,yes\n"
        "tones_b.wav,cat,0.25,other.wav,,low,1.5,/other,x2,no\n",
        encoding="utf-8",
    )
    return path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def arrow_fallbacks():
    """Streamlit's log records of a table it could not serialise as it was (it logs a traceback at
    INFO, then stringifies the column): every table the app shows must serialise as it is."""
    logger = logging.getLogger("streamlit.dataframe_util")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def app(app_archive, tiny_clap_dir, monkeypatch, arrow_fallbacks) -> AppTest:
    monkeypatch.setenv("SOUNDTRACE_ARCHIVE", str(app_archive))
    monkeypatch.setenv("SOUNDTRACE_MODEL", str(tiny_clap_dir))
    monkeypatch.setenv("SOUNDTRACE_DEVICE", "cpu")
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    assert not at.exception
    yield at
    fallbacks = [r.getMessage() for r in arrow_fallbacks if "Arrow" in r.getMessage()]
    assert not fallbacks, fallbacks


def on_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest, *columns: str):
    """The first table showing all of ``columns`` (st.dataframe keys are not visible to AppTest)."""
    for frame in at.dataframe:
        value = frame.value
        if set(columns) <= set(value.columns) | {value.index.name}:
            return value
    raise AssertionError(f"no table with columns {columns}")


def results(at: AppTest):
    return table(at, "file", "from (s)")


def search(at: AppTest, text: str = "a steady tone") -> AppTest:
    at.text_input(key="text").input(text).run()
    assert not at.exception, at.exception
    return at


# --- search ------------------------------------------------------------------------------------


def test_search_starts_empty_and_a_query_fills_the_results(app):
    assert not app.dataframe and "Type what you are listening for" in app.info[0].value
    table = results(search(app))
    assert len(table) == 10  # one page of the 13 indexed recordings
    assert list(table["score"]) == sorted(table["score"], reverse=True)
    assert {"file", "from (s)", "to (s)", "meta.site", "meta.date"} <= set(table.columns)


def test_a_filter_narrows_the_results(app):
    search(app)
    app.multiselect(key="choice_site").set_value(["porto"]).run()
    table = results(app)
    assert set(table["meta.site"]) == {"porto"} and len(table) == 2
    app.checkbox(key="flag_is_clipped").check().run()
    assert "clipped_speech.flac" not in set(results(app)["file"])
    assert "is_clipped" in app.caption[0].value and not app.exception


def test_metadata_named_like_a_column_of_the_results_never_shadows_it(app):
    """The tones carry metadata named label, score, file, rank, #, folder, mark...: the results show
    soundtrace's own values under those headers and the metadata beside them as meta.<column>."""
    search(app, "a steady tone")
    app.multiselect(key="choice_label").set_value(["dog bark", "cat"]).run()
    shown = results(app)
    assert list(shown.columns[:5]) == ["#", "file", "score", "from (s)", "to (s)"] and shown.columns[-1] == "folder"
    assert {f"meta.{c}" for c in SHADOWING} <= set(shown.columns) and shown.columns.is_unique
    assert list(shown["#"]) == [1, 2] and set(shown["file"]) == {"tones_a.wav", "tones_b.wav"}
    assert list(shown["score"]) == sorted(shown["score"], reverse=True) and not {0.5, 0.25} & set(shown["score"])
    assert {Path(f).name for f in shown["folder"]} == {"audio"}
    by_file = shown.set_index("file")
    assert by_file.loc["tones_a.wav", "meta.file"] == "elsewhere.wav" and by_file.loc["tones_b.wav", "meta.label"] == "cat"
    assert by_file.loc["tones_a.wav", "meta.score"] == 0.5 and by_file.loc["tones_a.wav", "meta.rank"] == 7
    assert by_file["meta.rank"].isna()["tones_b.wav"]  # an empty cell, not 0 or "None"
    assert set(by_file["meta.folder"]) == {"/elsewhere", "/other"} and set(by_file["meta.#"]) == {"x1", "x2"}


def test_a_date_range_narrows_the_results(app):
    search(app)
    app.date_input(key="date_date").set_value((date(2024, 5, 7), date(2024, 5, 8))).run()
    assert set(results(app)["meta.date"]) <= {"2024-05-07", "2024-05-08"}
    assert len(results(app)) == 3 and not app.exception


def test_paging_moves_through_the_results(app):
    first = set(results(search(app))["file"])
    app.button(key="next").click().run()
    second = results(app)
    assert len(second) == 4 and not first & set(second["file"])  # 14 recordings: the silent one too
    assert app.button(key="next").disabled
    app.button(key="previous").click().run()
    assert set(results(app)["file"]) == first


def test_selecting_a_hit_plays_its_window_and_draws_it(app):
    search(app)
    assert len(app.get("audio")) == 1 and len(app.get("image")) >= 1
    app.selectbox(key="hit").set_value(3).run()
    assert not app.exception and len(app.get("audio")) == 1
    row = results(app).iloc[3]
    assert any(c.value.startswith(f"{row['from (s)']:.1f}–{row['to (s)']:.1f} s") for c in app.caption)
    assert any(c.value.startswith("Highlight:") for c in app.caption)


def test_more_like_this_searches_by_the_chosen_window(app):
    search(app)
    app.button(key="more_like").click().run()
    assert not app.exception
    assert any("sound like #" in m.value for m in app.info)
    assert len(results(app)) == 10
    app.button[[b.label for b in app.button].index("Back to my search")].click().run()
    assert not any("sound like #" in m.value for m in app.info)


def test_query_by_an_uploaded_example(app):
    if not hasattr(app, "file_uploader"):
        pytest.skip("this Streamlit's AppTest cannot upload files")
    app.file_uploader(key="example").upload("clip.flac", (SAMPLES / "tone_440hz_3s.flac").read_bytes(), "audio/flac").run()
    assert not app.exception and len(results(app)) == 10


# --- audit and dashboard -------------------------------------------------------------------------


def test_running_an_audit_shows_counts_flagged_calls_and_a_diff(app):
    on_page(app, "audit")
    app.radio(key="source").set_value("Quick list").run()
    app.text_input(key="quick").input("tone, noise, music").run()
    app.text_input(key="quick_threshold").input("top 20%").run()
    app.button(key="run").click().run()
    assert not app.exception, app.exception
    counts = table(app, "flagged recordings")
    assert list(counts["label"]) == ["tone", "noise", "music"] and counts["flagged recordings"].sum() > 0
    flagged = table(app, "from (s)", "flagged (s)")
    assert len(flagged) > 0 and list(flagged.columns[:3]) == ["file", "label", "score"]  # a mark column once marked
    assert flagged.columns[-1] == "folder" and not any("_" in c for c in flagged.columns[:9])
    assert set(flagged["label"]) <= {"tone", "noise", "music"}  # the run's labels, never the metadata's
    assert {f"meta.{c}" for c in SHADOWING} <= set(flagged.columns) and flagged.columns.is_unique
    assert set(flagged["meta.label"]) <= {"dog bark", "cat", ""} and set(flagged["meta.folder"]) <= {"/elsewhere", "/other", ""}
    assert not any("offered for marking" in m.value for m in app.markdown)  # no stray docstring on the page
    assert all(round(p, 1) == p for p in flagged["percentile"]) and all(round(x, 3) == x for x in flagged["score"])
    assert all("/" not in name and name.endswith((".wav", ".flac", ".opus")) for name in flagged["file"])
    assert all(Path(folder).is_absolute() for folder in flagged["folder"])
    assert len(app.get("audio")) == 1  # the flagged span, cut on the server
    assert app.get("download_button")
    assert "percentile" in app.caption[1].value
    app.slider(key=f"threshold_{app.selectbox(key='run_choice').value}_tone").set_value(0.0).run()
    assert not app.exception
    assert {"before", "after"} <= set(table(app, "before", "after").columns)


def test_a_broken_label_set_is_a_message_not_a_traceback(app):
    on_page(app, "audit")
    app.radio(key="source").set_value("Write YAML").run()
    app.text_area(key="yaml").input("name: broken\nlabels:\n  - a\n  treshold: 1\n").run()
    app.button(key="run").click().run()
    assert not app.exception and app.error and "label set" in app.error[0].value.lower()


def test_a_saved_label_set_can_be_run(app):
    on_page(app, "audit")
    assert app.selectbox(key="saved").value.name == "call_centre.yaml"
    app.button(key="run").click().run()
    assert not app.exception
    assert "complaint" in set(table(app, "flagged recordings")["label"])
    # the tiny model's scores stay under the set's min_score: the page says so, label by label
    assert any(info.value == "Nothing was flagged in this run, and why:" for info in app.info)
    reasons = app.text[0].value.splitlines()
    assert len(reasons) == 7 and reasons[0].startswith("complaint: best score") and "below the set's min_score 0.2" in reasons[0]


def test_dashboard_charts_flagged_counts_over_time_and_by_column(app):
    on_page(app, "dashboard")
    assert len(app.get("vega_lite_chart") or app.get("arrow_vega_lite_chart")) == 2
    app.radio(key="period").set_value("week").run()
    app.selectbox(key="column").set_value("agent").run()
    assert not app.exception
    assert "(none)" in set(table(app, "value").index)


# --- classify and library --------------------------------------------------------------------------


def test_classify_shows_info_and_a_sorted_table(app):
    on_page(app, "classify")
    if not hasattr(app, "file_uploader"):
        pytest.skip("this Streamlit's AppTest cannot upload files; tests/test_app_media.py covers the function")
    app.file_uploader(key="upload").upload("clipped.flac", (SAMPLES / "clipped_speech.flac").read_bytes(), "audio/flac")
    app.text_input(key="labels").input("speech, dog barking, 音乐").run()
    assert not app.exception, app.exception
    scores = table(app, "probability", "highlight")
    assert set(scores["label"]) == {"speech", "dog barking", "音乐"}
    assert list(scores["score"]) == sorted(scores["score"], reverse=True)
    assert [m.label for m in app.metric] == ["Sample rate", "Channels", "Duration", "Format"]
    assert any("clipped" in w.value for w in app.warning)
    assert len(app.get("audio")) == 2  # the whole upload, and the highlighted seconds of the top label
    start, end = (float(x) for x in scores["highlight"][0].removesuffix(" s").split("–"))
    assert 1.0 <= end - start <= 3.0 and all(h == "" for h in scores["highlight"][1:])


def test_classify_with_one_label_claims_no_confidence(app):
    on_page(app, "classify")
    if not hasattr(app, "file_uploader"):
        pytest.skip("this Streamlit's AppTest cannot upload files")
    app.file_uploader(key="upload").upload("tone.flac", (SAMPLES / "tone_440hz_3s.flac").read_bytes(), "audio/flac")
    app.text_input(key="labels").input("a tone").run()
    (row,) = table(app, "probability", "confidence").to_dict("records")
    assert row["probability"] is None or row["probability"] != row["probability"]  # empty, never 1.000
    assert "high" not in row["confidence"] and any("no rival" in c.value for c in app.caption)


def test_missing_metadata_shows_as_an_empty_cell(app):
    shown = results(search(app, "silence"))
    assert "None" not in set(map(str, shown["meta.agent"])) and "" in set(shown["meta.agent"])
    assert all(isinstance(v, str) and (v == "" or date.fromisoformat(v)) for v in shown["meta.date"])  # ISO text


def test_a_new_run_is_compared_with_the_one_before(app):
    on_page(app, "audit")
    for labels in ("tone, noise", "tone, music"):
        app.radio(key="source").set_value("Quick list").run()
        app.text_input(key="quick").input(labels).run()
        app.button(key="run").click().run()
        assert not app.exception, app.exception
    newest = app.selectbox(key="run_choice").value
    assert app.selectbox(key=f"diff_b_{newest}").value == newest
    assert app.selectbox(key=f"diff_a_{newest}").value == newest - 1
    counts = table(app, "before", "after", "change").set_index("label")
    assert counts["after"].isna()["noise"] and counts["before"].isna()["music"]  # a label the run did not have
    assert counts["change"].isna()["noise"] and counts.loc["tone", "change"] == counts.loc["tone", "after"] - counts.loc["tone", "before"]


def test_searching_an_empty_archive_says_how_to_fill_it(tiny_clap_dir, tmp_path, monkeypatch):
    encoder = load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu"))
    (tmp_path / "nothing").mkdir()
    with Archive.open(tmp_path / "empty", encoder=encoder, create=True) as archive:
        archive.index([tmp_path / "nothing"])
    monkeypatch.setenv("SOUNDTRACE_ARCHIVE", str(tmp_path / "empty"))
    monkeypatch.setenv("SOUNDTRACE_MODEL", str(tiny_clap_dir))
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    try:
        assert not at.exception
        assert any("holds no recordings yet" in i.value for i in at.info)
        assert not at.get("text_input")  # nothing to search, so no search box
    finally:
        state.release_archive()


def test_no_archive_is_said_before_any_model_is_looked_for(app_archive, tmp_path, monkeypatch):
    """No archive and no model weights: Search and Library say there is no archive and how to make
    one, not that the model is missing; no model is loaded to say it."""
    monkeypatch.setenv("SOUNDTRACE_ARCHIVE", str(tmp_path / "nowhere"))
    monkeypatch.setenv("SOUNDTRACE_MODEL", str(tmp_path / "no-weights-here"))
    state.release_archive()
    models = dict(state._models)
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.run()
    for page in ("search", "library", "audit", "dashboard"):
        if page != "search":
            on_page(at, page)
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
        (said,) = [i.value for i in at.info if "No archive here" in i.value]
        assert str(tmp_path / "nowhere") in said and "soundtrace index FOLDER --archive" in said, said
        assert not at.get("text_input") and not at.success, page  # no search box, no "no indexing run" either
    assert state._models == models  # nothing was loaded

    monkeypatch.setenv("SOUNDTRACE_ARCHIVE", str(app_archive))  # an archive, still no weights
    try:
        for page in ("library", "dashboard"):  # catalog pages work without the model
            on_page(at, page)
            assert not at.error and not any("No archive here" in i.value for i in at.info), page
        assert {m.label: m.value for m in at.metric}["Recordings scored"] != "0"
        on_page(at, "search")
        search(at, "words never embedded before")
        assert "no-weights-here" in at.error[0].value  # the missing model, in one sentence, once it is needed
    finally:
        state.release_archive()


def test_library_shows_status_and_failed_files(app):
    on_page(app, "library")
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Recordings"] == "14" and metrics["Windows"] != "0"  # the silent sample is indexed, flagged
    failures = table(app, "reason")
    assert {"tone_440hz_2s_16k_s16le_mono.raw"} == set(failures["file"])
    assert set(failures["folder"]) == {str(SAMPLES)}
    assert not any(str(SAMPLES) in reason for reason in failures["reason"])  # the folder column says where


def test_a_writer_holding_the_archive_is_reported_not_a_traceback(app, app_archive, monkeypatch):
    """An indexing run yields its lock every few seconds; one that keeps it (here a bare DuckDB
    writer) makes pages say so instead of failing. Readers' 30 s patience is cut to keep this fast."""
    import indexer.archive.catalog

    connect = indexer.archive.catalog.connect
    monkeypatch.setattr(indexer.archive.catalog, "connect", lambda path, read_only, wait_s: connect(path, read_only, min(wait_s, 0.3)))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True);"
         " time.sleep(120)", str(app_archive / "catalog.duckdb")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"  # the app let go of its own lock after its run
        for page in ("library", "search", "audit", "dashboard"):
            on_page(app, page)
            assert any("Indexing in progress" in m.value for m in app.info), page
        state.release_archive()  # opening afresh while the writer holds on: the same message
        on_page(app, "library")
        assert sum("Indexing in progress" in m.value for m in app.info) == 2
    finally:
        holder.kill()
        holder.wait()
    app.button[0].click().run()  # "Try again"
    assert not app.exception and not any("Indexing in progress" in m.value for m in app.info)
    assert "No indexing run" in app.success[0].value


def test_the_app_lets_an_indexer_in_between_page_runs(app, app_archive):
    search(app)
    writer = subprocess.run(
        [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(app_archive / "catalog.duckdb")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert writer.returncode == 0, writer.stderr


def test_no_page_has_a_bare_string_that_streamlit_would_print():
    """Streamlit's "magic" writes any bare string statement of a page script to the page (a
    docstring after a constant, say); only the module docstring is exempt."""
    for script in [*sorted((ROOT / "search_app" / "views").glob("*.py")), MAIN]:
        tree = ast.parse(script.read_text(encoding="utf-8"))
        scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))]
        docstrings = {id(n.body[0]) for n in scopes if n.body and ast.get_docstring(n, clean=False) is not None}
        stray = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                 and isinstance(n.value.value, str) and id(n) not in docstrings]
        assert not stray, f"{script.name} line {stray[0]}: a bare string is shown on the page; make it a comment"


# --- launching ---------------------------------------------------------------------------------------


def test_launch_command_binds_localhost_headless_without_telemetry(tmp_path):
    argv = launch.command(tmp_path, 8765)
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4] == str(MAIN)
    settings = dict(zip(argv[5:-3:2], argv[6:-3:2]))
    assert settings == {
        "--server.address": "127.0.0.1", "--server.port": "8765", "--server.headless": "true",
        "--server.fileWatcherType": "none", "--browser.gatherUsageStats": "false", "--client.toolbarMode": "minimal",
    }  # fmt: skip
    assert argv[-3:] == ["--", "--archive", str(tmp_path.resolve())]
    assert "--" not in launch.command(None, 1, "0.0.0.0") and "0.0.0.0" in launch.command(None, 1, "0.0.0.0")


def _specs(at: AppTest) -> list[dict]:
    import json

    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def test_dashboard_has_one_tick_per_period_and_keeps_equal_counts_apart(app):
    on_page(app, "dashboard")
    assert [m.label for m in app.metric] == ["Recordings scored", "Flagged for any label", "Share flagged"]
    over_time, by_column = _specs(app)
    assert over_time["mark"]["type"] == "bar" and over_time["encoding"]["x"]["type"] == "ordinal"
    assert over_time["encoding"]["y"]["stack"] == "zero" and over_time["encoding"]["color"]["field"] == "label"
    assert by_column["encoding"]["y"]["type"] == "nominal" and by_column["encoding"]["x"]["type"] == "quantitative"
    assert by_column["encoding"]["y"]["sort"] == {"field": "flagged", "op": "sum", "order": "descending"}
    app.radio(key="measure").set_value("share").run()
    over_time, by_column = _specs(app)
    assert over_time["mark"]["type"] == "rect" and over_time["encoding"]["y"]["field"] == "label"
    assert by_column["encoding"]["x"]["field"] == "share" and "yOffset" in by_column["encoding"]


def test_over_time_labels_each_period_once():
    import pandas as pd

    from search_app import charts

    days = pd.to_datetime(["2024-05-01", "2024-05-02", "2024-05-03"]).date
    counts = pd.DataFrame({
        "period": [d for d in days for _ in range(2)], "label": ["complaint", "abuse"] * 3,
        "flagged": [2, 2, 0, 0, 1, 1], "scored": [4, 4, 4, 4, 2, 2],
    })
    spec = charts.over_time(counts, "day").to_dict()
    assert spec["encoding"]["x"]["sort"] == ["Wed 2024-05-01", "Thu 2024-05-02", "Fri 2024-05-03"]
    week = charts.over_time(counts.assign(period=[days[0]] * 6), "week").to_dict()
    assert week["encoding"]["x"]["sort"] == ["week of 2024-05-01"]
    assert list(charts.with_share(counts)["share"]) == [0.5, 0.5, 0.0, 0.0, 0.5, 0.5]
    table = charts.value_table(counts.rename(columns={"period": "value"}).assign(value=["a", "a", "b", "b", "c", "c"]))
    assert list(table.index) == ["a", "c", "b"] and list(table.columns) == ["abuse", "complaint", "abuse %", "complaint %"]


# --- marks -------------------------------------------------------------------------------------


def _buttons(at: AppTest, prefix: str):
    return [b for b in at.button if (b.key or "").startswith(prefix)]


def test_hits_are_marked_right_or_wrong_and_the_label_learns_from_them(app, app_archive):
    from indexer.learning.learned import newest_learned
    from indexer.learning.marks import marks_of
    from indexer.search.ranking import search_vector

    search(app, "a steady tone")
    right, wrong = _buttons(app, "hit_mark_yes_"), _buttons(app, "hit_mark_no_")
    assert len(right) == len(wrong) == len(results(app)) > 2
    assert app.selectbox(key="learned").disabled  # nothing learned yet: nothing to pick
    right[0].click().run()
    assert not app.exception and "Marked window" in app.success[0].value
    _buttons(app, "hit_mark_yes_")[1].click().run()
    _buttons(app, "hit_mark_no_")[2].click().run()
    assert any("2 ✓, 1 ✗" in c.value for c in app.caption)
    assert list(results(app)["mark"][:4]) == ["✓", "✓", "✗", ""]  # each hit's mark beside it
    assert "mark" not in results(search(app, "speech")) and "mark" in results(search(app, "a steady tone"))
    assert [b.proto.type for b in _buttons(app, "hit_mark_yes_")[:3]] == ["primary", "primary", "secondary"]
    assert sum("marked ✗" in m.value for m in app.markdown) == 1
    app.button(key="hit_mark_learn").click().run()
    assert not app.exception and any("version 1" in i.value and "right here" in i.value for i in app.info)

    app.button(key="hit_mark_search_learned").click().run()  # searched right there, by its newest version
    assert not app.exception and app.selectbox(key="learned").value == "a steady tone" and app.text_input(key="text").value == ""
    assert any("learned label “a steady tone” (version 1)" in h.value for h in app.subheader)
    ranked = results(app)
    assert app.text_input(key="mark_label_a steady tone").value == "a steady tone"
    state.release_archive()
    with Archive.open(app_archive, read_only=True) as archive:
        marks = marks_of(archive, "a steady tone")
        direction = newest_learned(archive, "a steady tone").scorer.direction
        expected = [Path(h.path).name for h in search_vector(archive, direction, 10)]
    assert list(ranked["file"]) == expected  # as `soundtrace search --label` ranks
    marked = {int(b.key.rsplit("_", 1)[1]) for b in (right[0], right[1])}
    assert {m.window_id for m in marks if m.positive} == marked and sum(not m.positive for m in marks) == 1
    app.text_input(key="text").input("a steady tone").run()  # words again: the learned pick is dropped
    assert app.selectbox(key="learned").value == "" and any("matching" in h.value for h in app.subheader)


def test_the_windows_worth_marking_next_are_offered_with_their_buttons(app):
    search(app, "a steady tone")
    app.checkbox(key="suggest").check().run()
    assert not app.exception
    offered = _buttons(app, "suggest_mark_yes_")
    assert len(offered) >= 2
    assert any("scores high" in m.value for m in app.markdown) and any("unsure" in m.value for m in app.markdown)


def test_flagged_recordings_of_an_audit_can_be_marked(app, app_archive):
    from indexer.learning.marks import marks_of, window_marks

    on_page(app, "audit")
    [button] = _buttons(app, "flag_mark_0_no_")
    window_id = int(button.key.rsplit("_", 1)[1])
    label = app.selectbox(key="flagged_pick").options[0].split(": ", 1)[1].rsplit(" at ", 1)[0]
    button.click().run()
    assert not app.exception and f"Marked window {window_id} ✗ for “{label}”" in app.success[0].value
    assert table(app, "flagged (s)")["mark"][0] == "✗" and _buttons(app, "flag_mark_0_no_")[0].proto.type == "primary"
    state.release_archive()
    with Archive.open(app_archive, read_only=True) as archive:
        assert [(m.window_id, m.positive) for m in marks_of(archive, label)] == [(window_id, False)]
        assert window_marks(archive, label, [window_id, window_id + 1]) == {window_id: False}
    app.selectbox(key="flagged_pick").set_value(0).run()
    app.button(key="flag_mark_learn").click().run()
    app.button(key="flag_mark_search_learned").click().run()  # learned on the Audit page, searched on Search
    assert not app.exception and app.selectbox(key="learned").value == label
    assert len(results(app)) == 10 and any(f"learned label “{label}”" in h.value for h in app.subheader)


def test_a_new_search_starts_a_new_mark_label(app):
    search(app, "a steady tone")
    assert app.text_input(key="mark_label_a steady tone").value == "a steady tone"
    search(app, "speech")
    assert app.text_input(key="mark_label_speech").value == "speech"
