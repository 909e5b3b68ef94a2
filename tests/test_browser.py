"""The app in a real browser: Debian's headless Chromium, driven by Playwright, against a live server.

A tiny archive (the project's samples and metadata, the tiny CLAP) is served by ``streamlit run``
on a free local port, exactly as ``soundtrace app`` starts it. The tests type a query, pick a hit
and check its <audio> element really loads, run an audit, and visit every page, saving a
full-page screenshot of each under ``test-artifacts/screenshots/``.

Skipped only when /usr/bin/chromium or the ``playwright`` package is missing (``.ci/run`` installs
both). Playwright's own browser downloads are never used; every request is kept on 127.0.0.1.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from indexer import Archive, EncoderConfig
from indexer.audit.runner import run_audit
from indexer.audit.labelset import inline_labelset
from search_app import launch

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
METADATA = ROOT / "data" / "metadata.csv"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
LOCAL_HOSTS = {"127.0.0.1"}
DEEP_FOLDER = "recordings/customer-service/leeds-and-porto-offices/2024-05/first-week-of-may/calls-kept-for-quality-review"

START_S = 60.0  # the server answering its health check
LOAD_MS = 60_000  # the longest wait for a page (or a rerun after a click) to show what it should

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing (`apt-get install chromium`; .ci/run does it)", allow_module_level=True)
try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError as err:  # pragma: no cover - depends on the environment
    pytest.skip(f"the playwright package is missing ({err}; pip install -e '.[dev]')", allow_module_level=True)

expect.set_options(timeout=LOAD_MS)


# --- the live app --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_archive(tiny_clap_dir, tmp_path_factory) -> Path:
    """The project's samples and metadata indexed with the tiny CLAP, plus one saved audit run
    (so the Dashboard has something to chart whichever test runs first)."""
    from indexer.model.loading import load_encoder

    root = tmp_path_factory.mktemp("browser")
    directory = root / "archive"
    recordings = root / DEEP_FOLDER  # a real archive's folders are long: the tables must still fit the page
    shutil.copytree(SAMPLES, recordings)
    encoder = load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu"))
    with Archive.open(directory, encoder=encoder, create=True) as archive:
        archive.index([recordings])
        archive.catalog.import_metadata(METADATA)
        run_audit(archive, inline_labelset("tone, noise, speech", mode="multi-label", threshold="top 30%"))
    return directory


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except (OSError, urllib.error.URLError):
        return False


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def app_url(browser_archive, tiny_clap_dir, tmp_path_factory) -> str:
    """``streamlit run`` serving the archive on a free 127.0.0.1 port; stopped afterwards, always."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("browser-app") / "streamlit.log"
    env = {
        **os.environ,
        "SOUNDTRACE_ARCHIVE": str(browser_archive),
        "SOUNDTRACE_MODEL": str(tiny_clap_dir),
        "SOUNDTRACE_DEVICE": "cpu",
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            launch.command(browser_archive, port, "127.0.0.1"), cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_S
        while not healthy(url):
            if process.poll() is not None:
                pytest.fail(f"the app exited with status {process.returncode}:\n{log_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"the app was not healthy after {START_S:.0f} s:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.25)
        yield url
    finally:
        stop(process)
        print(f"\n--- streamlit log ({log_path}) ---\n{log_path.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, app_url, request) -> Page:
    """A fresh tab (a fresh Streamlit session) on the app's first page; nothing leaves 127.0.0.1.
    When the test fails, what the tab showed is saved as ``failed-<test>.png`` beside the others."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, service_workers="block")
    elsewhere: list[str] = []

    def keep_local(route) -> None:
        target = urlparse(route.request.url)
        if target.scheme in ("http", "https", "ws", "wss") and target.hostname not in LOCAL_HOSTS:
            elsewhere.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", keep_local)
    tab = context.new_page()
    tab.set_default_timeout(LOAD_MS)
    tab.goto(app_url)
    # The Search page's first run ends with this hint; nothing is clicked while it still runs.
    expect(tab.get_by_test_id("stAlertContentInfo").first).to_contain_text("Type what you are listening for")
    settle(tab)
    failed_shot = SCREENSHOTS / f"failed-{request.node.name}.png"
    failed_shot.unlink(missing_ok=True)  # never a stale one from an earlier run
    failures = request.session.testsfailed
    yield tab
    if request.session.testsfailed > failures:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(failed_shot), full_page=True)
    context.close()
    assert not elsewhere, f"the app asked for something beyond 127.0.0.1: {elsewhere}"


# --- helpers ---------------------------------------------------------------------------------------


def go_to(page: Page, title: str) -> None:
    """Click the page's link in the sidebar navigation and wait for its title."""
    page.get_by_test_id("stSidebarNavLink").filter(has_text=title).click()
    expect(page.get_by_test_id("stHeading").first).to_contain_text(title, timeout=LOAD_MS)


def settle(page: Page) -> None:
    """Wait until Streamlit is not running the script (its status widget gone, nothing stale)."""
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=LOAD_MS)
    expect(page.locator('[data-testid="stElementContainer"][data-stale="true"]')).to_have_count(0, timeout=LOAD_MS)


def assert_no_errors(page: Page) -> None:
    exceptions = page.get_by_test_id("stException")
    assert exceptions.count() == 0, exceptions.first.inner_text()
    errors = page.get_by_test_id("stAlertContentError")
    assert errors.count() == 0, errors.first.inner_text()


def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot: Streamlit scrolls inside its main pane, so the window is first made
    as tall as that pane's content (the page itself never scrolls)."""
    settle(page)
    page.wait_for_timeout(500)  # charts and images finish drawing after the run ends
    height = page.evaluate(
        """() => Math.max(...['stMain', 'stSidebarContent', 'stAppViewContainer']
               .map(id => document.querySelector(`[data-testid="${id}"]`))
               .filter(Boolean).map(el => el.scrollHeight))"""
    )
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(max(int(height) + 40, size["height"]), 8000)})
    page.wait_for_timeout(300)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    assert path.stat().st_size > 10_000, f"{path} looks blank"
    return path


def grid(page: Page, column: str) -> list[dict[str, str]]:
    """Rows of the first st.dataframe with ``column``, read from the accessible table that the grid
    keeps inside its canvas (hidden from view, so roles are looked up with include_hidden). The grid
    draws only rows on screen, so it is scrolled into view first."""
    header = page.get_by_role("columnheader", name=column, exact=True, include_hidden=True)
    frame = page.get_by_test_id("stDataFrame").filter(has=header).first
    frame.scroll_into_view_if_needed()
    table = frame.locator('table[role="grid"]')
    cells = table.locator("tbody tr td")
    expect(cells.first).to_be_attached()
    for _ in range(50):  # the table is redrawn as the grid settles: read it until it holds still
        headers = [text.strip() for text in table.locator("thead th").all_text_contents()]
        rows = [[text.strip() for text in row.locator("td").all_text_contents()] for row in table.locator("tbody tr").all()]
        if rows and all(rows):
            return [dict(zip(headers, row)) for row in rows]
        page.wait_for_timeout(100)
    raise AssertionError(f"the table with {column!r} shows no rows")


def selectbox(page: Page, label: str):
    """A selectbox by its label: a combobox whose value is the chosen option's text."""
    return page.get_by_role("combobox", name=label, exact=True)


def shows(page: Page, label: str, text: str) -> None:
    """Wait until the selectbox ``label`` shows an option containing ``text``."""
    expect(selectbox(page, label)).to_have_value(re.compile(re.escape(text)))


def choose(page: Page, label: str, option: str) -> None:
    """Open a selectbox and click the option whose text contains ``option``; wait until it shows.

    The list closes again on any scroll, so the box is scrolled into view first, then clicked;
    ArrowDown (as a keyboard user would) opens it if the click still did not."""
    box = selectbox(page, label)
    box.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box.click()
    if box.get_attribute("aria-expanded") != "true":
        box.press("ArrowDown")
    expect(box).to_have_attribute("aria-expanded", "true")
    page.get_by_role("option").filter(has_text=option).first.click()
    shows(page, label, option)


LOAD_AUDIO = """async (audio) => {
    const src = audio.currentSrc || audio.src || '';
    if (src && !(audio.readyState >= 1 && isFinite(audio.duration))) {
        await new Promise((resolve) => {
            const done = () => resolve();
            audio.addEventListener('loadedmetadata', done, {once: true});
            audio.addEventListener('error', done, {once: true});
            setTimeout(done, 20000);
            audio.load();
        });
    }
    return {src: audio.currentSrc || audio.src || '', duration: audio.duration, readyState: audio.readyState,
            error: audio.error ? audio.error.code : null};
}"""


def playable(page: Page, audio) -> dict:
    """The <audio> element's state after loading its source; asserts the browser can play it."""
    state = audio.evaluate(LOAD_AUDIO)
    assert state["src"].startswith("http://127.0.0.1:"), state
    assert state["error"] is None, f"the browser could not load the audio: {state}"
    assert state["readyState"] >= 1 and math.isfinite(state["duration"]) and state["duration"] > 0, state
    response = page.request.get(state["src"])
    assert response.ok and response.body()[:4] == b"RIFF", (response.status, response.headers)
    return state


TABLE_WIDTHS = """() => {
    const main = document.querySelector('[data-testid="stMainBlockContainer"]').getBoundingClientRect();
    return [...document.querySelectorAll('[data-testid="stDataFrame"]')].map((frame) => {
        const box = frame.getBoundingClientRect();
        const scroller = frame.querySelector('.dvn-scroller');
        const headers = [...frame.querySelectorAll('table[role="grid"] thead th')].map((th) => th.textContent.trim());
        return {headers, left: box.left, right: box.right, main_left: main.left, main_right: main.right,
                content: scroller ? scroller.scrollWidth : null, shown: scroller ? scroller.clientWidth : null};
    });
}"""


SCROLLBAR_PX = 8
"""A grid with a vertical scrollbar lays its columns out a few pixels wider than it shows them."""


def tables_fit(page: Page) -> list[dict]:
    """Every table on the page lies within the main block, and its columns within the table: nothing
    to scroll sideways to read a row (each grid is scrolled into view so that it is drawn)."""
    frames = page.get_by_test_id("stDataFrame")
    for i in range(frames.count()):
        frames.nth(i).scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    widths = page.evaluate(TABLE_WIDTHS)
    for table in widths:
        assert table["main_left"] - 1 <= table["left"] and table["right"] <= table["main_right"] + 1, str(table)
        assert table["content"] is not None and table["content"] <= table["shown"] + SCROLLBAR_PX, str(table)
    return widths


# --- the pages -------------------------------------------------------------------------------------


def test_search_finds_plays_and_draws_a_hit(page: Page):
    expect(page.get_by_test_id("stAlertContentInfo").first).to_contain_text("Type what you are listening for")
    assert page.get_by_test_id("stDataFrame").count() == 0  # no results before a query
    expect(page.get_by_test_id("stAppDeployButton")).to_have_count(0)  # no developer toolbar for analysts
    box = page.get_by_label("What are you listening for?")
    box.fill("a steady tone")
    box.press("Enter")

    expect(page.get_by_test_id("stHeading").filter(has_text="Recordings matching")).to_contain_text("a steady tone")
    rows = grid(page, "from (s)")
    assert len(rows) == 10 and [r["#"] for r in rows] == [str(i) for i in range(1, 11)], rows
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text="Page 1: results 1–10")).to_be_visible()

    # Pick a hit in the "Hit" selectbox (the first one first, then another), and play each.
    for index in (0, 1):
        row = rows[index]
        choose(page, "Hit", f"#{index + 1} {row['file']}")
        settle(page)
        span = f"{float(row['from (s)']):.1f}–{float(row['to (s)']):.1f} s"
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text=span).first).to_be_visible()
        audio = page.locator("audio")
        expect(audio).to_have_count(1)
        state = playable(page, audio)
        window = float(row["to (s)"]) - float(row["from (s)"])
        assert abs(state["duration"] - window) < 0.15, (state, row)  # exactly the hit window, cut on the server
        expect(page.get_by_test_id("stImage").first).to_be_visible()  # waveform and spectrogram
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text="Highlight:")).to_be_visible()
    tables_fit(page)
    assert_no_errors(page)
    screenshot(page, "search")


def latest_run(page: Page) -> int:
    """The number of the run the Audit page's "Audit run" box shows (the newest, after a run)."""
    value = selectbox(page, "Audit run").input_value()
    found = re.match(r"#(\d+) ", value)
    assert found, value
    return int(found.group(1))


def run_audit_button(page: Page, expected_run: str) -> None:
    settle(page)  # a click that lands while the page is still running can be dropped by Streamlit
    button = page.get_by_role("button", name="Run audit")
    expect(button).to_be_enabled()
    button.click()
    shows(page, "Audit run", expected_run)
    settle(page)


def test_audit_runs_label_sets_and_shows_counts(page: Page):
    go_to(page, "Audit")
    settle(page)
    first = latest_run(page)  # the fixture saved one already, so the form starts folded

    # A saved label set: the project's call-centre YAML, shown before it runs.
    expander = page.get_by_test_id("stExpander").filter(has_text="Run an audit")
    if not expander.get_by_text("Saved label set").is_visible():
        expander.locator("summary").click()
    shows(page, "Saved label set", "call_centre.yaml")
    expect(page.get_by_test_id("stCode").first).to_contain_text("call-centre QA")
    run_audit_button(page, f"#{first + 1} call-centre QA")
    counts = grid(page, "flagged recordings")
    labels = [r["label"] for r in counts]
    assert labels == ["complaint", "abuse", "emergency", "hold music", "silence", "praise", "background chatter"], counts
    assert all(r["flagged recordings"].isdigit() for r in counts), counts
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text="windows scored in").first).to_be_visible()

    # A quick list typed in, with a percentile threshold (so the tiny model flags something).
    page.get_by_test_id("stRadio").get_by_text("Quick list", exact=True).click()
    labels_box = page.get_by_label("Labels, comma-separated")
    labels_box.fill("tone, noise, music")
    labels_box.press("Enter")
    settle(page)
    threshold_box = page.get_by_label("Threshold (a cosine score")
    threshold_box.fill("top 30%")
    threshold_box.press("Enter")
    settle(page)
    run_audit_button(page, f"#{first + 2} ")
    counts = grid(page, "flagged recordings")
    assert [r["label"] for r in counts] == ["tone", "noise", "music"], counts
    assert sum(int(r["flagged recordings"]) for r in counts) > 0, counts
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text="percentile").first).to_be_visible()
    expect(page.get_by_test_id("stImage").first).to_be_visible()  # the score histogram

    # The flagged recordings, and the first one's flagged span playing in the browser.
    flagged = grid(page, "flagged (s)")
    assert flagged and {r["label"] for r in flagged} <= {"tone", "noise", "music"}, flagged
    assert list(flagged[0])[:3] == ["file", "label", "score"] and list(flagged[0])[-1] == "folder", str(list(flagged[0]))
    shows(page, "Listen to", f"{Path(flagged[0]['file']).name}: {flagged[0]['label']}")
    state = playable(page, page.locator("audio"))
    span = float(flagged[0]["to (s)"]) - float(flagged[0]["from (s)"])
    assert abs(state["duration"] - span) < 0.15, (state, flagged[0])
    expect(page.get_by_test_id("stDownloadButton")).to_be_visible()

    history = grid(page, "standing")
    assert [int(r["run"]) for r in history] == list(range(first + 2, 0, -1)), history
    expect(page.get_by_test_id("stHeading").filter(has_text="Compare two runs")).to_be_visible()
    assert grid(page, "change")
    tables_fit(page)
    assert_no_errors(page)
    screenshot(page, "audit")


def test_dashboard_charts_flagged_recordings(page: Page):
    go_to(page, "Dashboard")
    shows(page, "Audit run", "#")
    settle(page)
    expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(2, timeout=LOAD_MS)
    expect(page.get_by_test_id("stVegaLiteChart").first.locator("canvas, svg").first).to_be_visible()
    metrics = page.get_by_test_id("stMetricLabel").all_inner_texts()
    assert metrics == ["Recordings scored", "Flagged for any label", "Share flagged"], metrics
    assert grid(page, "value") is not None
    tables_fit(page)
    assert_no_errors(page)
    screenshot(page, "dashboard")
    page.get_by_test_id("stRadio").filter(has_text="Show").get_by_text("share of recordings flagged").click()
    settle(page)
    expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(2)
    assert_no_errors(page)
    screenshot(page, "dashboard-share")


def test_classify_an_uploaded_recording(page: Page):
    go_to(page, "Classify")
    expect(page.get_by_text("Upload a recording to classify it.")).to_be_visible()
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(SAMPLES / "tone_440hz_3s.flac"))
    expect(page.get_by_test_id("stMetricLabel").filter(has_text="Sample rate")).to_be_visible(timeout=LOAD_MS)
    settle(page)
    metrics = dict(zip(page.get_by_test_id("stMetricLabel").all_inner_texts(), page.get_by_test_id("stMetricValue").all_inner_texts()))
    assert metrics.get("Duration") == "3.0 s" and metrics.get("Channels") == "1", metrics
    scores = grid(page, "probability")
    assert {r["label"] for r in scores} == {"speech", "music", "silence", "noise"}, scores
    expect(page.get_by_test_id("stImage").first).to_be_visible()  # the waveform
    players = page.get_by_test_id("stAudio")
    expect(players).to_have_count(2)  # the whole upload, and the highlighted seconds
    expect(page.get_by_text("that make it")).to_be_visible()
    whole = players.nth(0).evaluate(LOAD_AUDIO)
    assert whole["error"] is None and abs(whole["duration"] - 3.0) < 0.1, whole  # the upload as sent
    assert 1.0 <= playable(page, players.nth(1))["duration"] <= 3.05  # the 1–3 s, cut as WAV
    tables_fit(page)
    assert_no_errors(page)
    screenshot(page, "classify")


def test_library_lists_the_archive_and_its_failures(page: Page):
    go_to(page, "Library")
    expect(page.get_by_test_id("stMetricLabel").filter(has_text="Recordings")).to_be_visible(timeout=LOAD_MS)
    settle(page)
    metrics = dict(zip(page.get_by_test_id("stMetricLabel").all_inner_texts(), page.get_by_test_id("stMetricValue").all_inner_texts()))
    assert metrics["Recordings"] == "11" and metrics["Windows"] not in ("", "0"), metrics  # silence is indexed
    expect(page.get_by_test_id("stHeading").filter(has_text="Failed files (1)")).to_be_visible()
    failures = {Path(r["file"]).name for r in grid(page, "reason")}
    assert failures == {"tone_440hz_2s_16k_s16le_mono.raw"}, failures
    expect(page.get_by_text("No indexing run is writing to the archive right now.")).to_be_visible()
    tables_fit(page)
    assert_no_errors(page)
    screenshot(page, "library")


def test_the_browser_sees_no_exception_on_any_page(page: Page):
    """Each page straight from its URL (a fresh session each), not only through the navigation."""
    base = page.url.rstrip("/")
    for path in ("", "audit", "dashboard", "classify", "library"):
        page.goto(f"{base}/{path}")
        expect(page.get_by_test_id("stHeading").first).to_be_visible(timeout=LOAD_MS)
        settle(page)
        assert_no_errors(page)


def test_several_tabs_at_once_see_no_exception(page: Page):
    """Three tabs opened together, as a team sharing one app would: their page runs overlap."""
    base = page.url.rstrip("/")
    context = page.context
    seen: list[str] = []
    for _ in range(3):
        tabs = [context.new_page() for _ in range(3)]
        for tab, path in zip(tabs, ("audit", "dashboard", "library")):
            tab.goto(f"{base}/{path}", wait_until="commit")  # start all three before any has finished
        for tab in tabs:
            expect(tab.get_by_test_id("stHeading").first).to_be_visible()
            settle(tab)
            exceptions = tab.get_by_test_id("stException")
            seen += [f"{tab.url}: {text.splitlines()[0]}" for text in exceptions.all_inner_texts()]
            tab.close()
    assert not seen, "\n".join(seen)
