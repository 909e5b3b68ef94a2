"""Hostile input changes nothing: crafted files, names and headers are recorded with a reason, the
run goes on, and nothing a user writes (a CSV header, a filter) runs as SQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from indexer import Archive
from indexer.errors import MetadataError
from indexer.search.filtering import SearchFilters
from indexer.search.ranking import allowed_window_ids, search_text
from indexer.archive.sql import quote_identifier
from tests import hostile_inputs
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    cases = hostile_inputs.build(folder / "corpus")
    good = [write_sequence(folder / "corpus" / f"good{i}.wav", [(440 * (i + 1), 4)]) for i in range(3)]
    return folder, cases, good


def _outcomes(archive) -> dict[str, tuple[str, str | None, str | None]]:
    rows = archive.catalog.con.execute("SELECT path, status, error_kind, error FROM recordings").fetchall()
    return {path: (status, kind, error) for path, status, kind, error in rows}


def _judge(cases, outcomes):
    from indexer.audio.sources import path_key

    tally, wrong = Counter(), []
    for case in cases:
        key = path_key(Path(os.path.abspath(case.path)).resolve() if not case.path.is_symlink() else Path(os.path.abspath(case.path)))
        status, kind, error = outcomes.get(key, ("not recorded", None, None))
        tally["tried"] += 1
        if status == "failed" and error and "\n" not in error:
            tally["failed with a reason"] += 1
        elif status == "indexed":
            tally["indexed"] += 1
        ok = status == case.expect or (case.expect == hostile_inputs.RECORDED and status in ("indexed", "failed"))
        ok = ok and (status != "failed" or bool(error and "\n" not in error))
        if not ok:
            wrong.append((case.name, case.expect, status, kind, error))
    return tally, wrong


def test_one_run_over_the_hostile_corpus_records_everything_and_keeps_the_good_files(corpus, tmp_path):
    folder, cases, good = corpus
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        report = archive.index([folder / "corpus"])
        outcomes = _outcomes(archive)
    tally, wrong = _judge(cases, outcomes)
    print(dict(tally))
    assert not wrong, wrong
    assert all(outcomes[str(g.resolve())][0] == "indexed" for g in good)
    assert len(report.failed) == tally["failed with a reason"]


def test_each_hostile_file_named_on_its_own_is_recorded(corpus, tmp_path):
    """Named explicitly, a pipe, a link loop or a bad name is recorded as failed, not silently skipped."""
    folder, cases, _ = corpus
    picked = [c for c in cases if c.name in ("fifo", "symlink_loop", "symlink_dangling", "name not utf-8", "all_nan", "header_rate1")]
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        report = archive.index([c.path for c in picked])
        outcomes = _outcomes(archive)
    tally, wrong = _judge(picked, outcomes)
    assert not wrong, wrong
    assert len(report.failed) == len(picked)
    reasons = {Path(f.path).name: f.error for f in report.failed}
    assert "is a named pipe, not a file" in reasons["pipe.wav"]
    assert "loops back on itself" in reasons["loop_a.wav"]
    assert "which does not exist" in reasons["dangling.wav"]
    assert "not valid UTF-8" in next(r for n, r in reasons.items() if n.startswith("latin1"))
    assert "is NaN" in reasons["all_nan.wav"]
    assert "sample rate of 1 Hz" in reasons["rate1.wav"]


def test_a_second_run_over_the_corpus_does_nothing(corpus, tmp_path):
    folder, _, _ = corpus
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        first = archive.index([folder / "corpus"])
        again = archive.index([folder / "corpus"])
    assert again.indexed == 0 and not again.failed and again.unchanged == first.discovered


def test_the_cli_survives_the_corpus_and_prints_every_name(corpus, tmp_path):
    folder, cases, _ = corpus
    result = subprocess.run(
        [sys.executable, "-c", CLI_WITH_FAKE, str(folder / "corpus"), str(tmp_path / "arch")],
        capture_output=True, cwd=ROOT, timeout=600, env={**os.environ, "COLUMNS": "3000"},  # no folded cells
    )
    assert result.returncode == 3, result.stderr.decode(errors="replace")[-3000:]  # finished, some failed
    assert b"Traceback" not in result.stderr
    printed = result.stdout + result.stderr
    assert b"latin1-\\xe9t\\xe9-\\xff.wav" in printed
    assert b"\x1b" not in printed and b"\x07" not in printed  # control characters are shown escaped
    assert b"[bold]junk[red] \\x1b[2J.wav" in printed  # brackets are text, not markup


CLI_WITH_FAKE = """
import sys
from unittest import mock
sys.path.insert(0, '.')
from tests.fakes import FakeEncoder
with mock.patch('indexer.model.loading.load_encoder', lambda cfg: FakeEncoder()):
    from indexer.cli.main import cli
    cli(['index', sys.argv[1], '--archive', sys.argv[2], '--quiet', '--model', 'fake'], prog_name='soundtrace')
"""


# --- SQL from data -------------------------------------------------------------------------------

INJECTED_HEADER = (
    'file,"d"" AS DATE) IS NULL; COPY (SELECT content FROM read_text(\'/etc/hostname\')) TO \'{leak}\'; '
    'SELECT w.id FROM windows w JOIN recordings_view r ON w.recording_id = r.id WHERE CAST(r.""d",d\n'
)


@pytest.fixture()
def small_archive(tmp_path):
    drop = tmp_path / "drop"
    write_sequence(drop / "a.wav", [(440, 10)])
    write_sequence(drop / "b.wav", [(1200, 10)])
    archive = Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True)
    archive.index([drop])
    yield archive, drop
    archive.close()


def test_a_csv_header_holding_sql_is_refused_at_import(small_archive, tmp_path):
    archive, drop = small_archive
    leak = tmp_path / "leak.csv"
    csv = drop / "meta.csv"
    csv.write_text(INJECTED_HEADER.format(leak=leak) + "a.wav,2024-05-02,2024-05-02\n")
    with pytest.raises(MetadataError) as info:
        archive.catalog.import_metadata(csv)
    assert "has a column named" in str(info.value) and "rename it in the CSV" in str(info.value)
    assert not leak.exists()
    assert archive.catalog.metadata_columns() == []


def test_a_hostile_column_name_that_reached_the_catalog_is_only_ever_quoted(small_archive, tmp_path):
    """Even past the import check (an archive from an older version, say), a name is never SQL."""
    archive, _ = small_archive
    leak = tmp_path / "leak.csv"
    hostile = INJECTED_HEADER.format(leak=leak).split(",")[1].strip('"').replace('""', '"')
    con = archive.catalog.con
    con.execute(f"ALTER TABLE metadata ADD COLUMN {quote_identifier(hostile)} DATE")
    con.execute(f"INSERT INTO metadata (_name, {quote_identifier(hostile)}) VALUES ('a.wav', DATE '2024-05-02')")
    archive.catalog._refresh_view()
    filters = SearchFilters(since="2024-05-01", date_column=hostile)
    hits = search_text(archive, "tone 440", k=5, filters=filters)
    assert [Path(h.path).name for h in hits] == ["a.wav"]
    from indexer.audit.runner import run_audit
    from indexer.audit.labelset import inline_labelset

    run_audit(archive, inline_labelset("tone 440, tone 1200"), filters)
    assert not leak.exists()


def test_ordinary_headers_are_kept_and_trimmed_and_computed_columns_are_not_shadowed(small_archive):
    archive, drop = small_archive
    csv = drop / "meta.csv"
    csv.write_text("file ,Recorder's ID,Temp (°C),Depth [m],Date:Time,modified_at\na.wav,R1,21.5,3,2024-05-02 10:00:00,2001-01-01\n")
    assert archive.catalog.import_metadata(csv) == 1
    columns = archive.catalog.metadata_columns()
    assert columns == ["Recorder's ID", "Temp (°C)", "Depth [m]", "Date:Time", "meta_modified_at"]
    view = archive.catalog.view_columns()
    assert "modified_at_1" not in view and view["modified_at"].startswith("TIMESTAMP")
    hits = search_text(archive, "tone 440", k=5, filters=SearchFilters(where='"Recorder\'s ID" = \'R1\''))
    assert [Path(h.path).name for h in hits] == ["a.wav"]


def test_picks_that_narrow_nothing_filter_nothing(small_archive):
    from indexer.search.filtering import Picks

    archive, _ = small_archive
    empty = Picks(choices=(("file_name", ()),), dates=(("modified_at", None, None),))
    assert not empty
    assert allowed_window_ids(archive, SearchFilters(picks=empty)) is None


@pytest.mark.parametrize(
    "where",
    ["peak > 0.1", "rms_db > -40", "silent_fraction < 0.5", "clipped_fraction = 0", "not is_silent", "not is_clipped",
     "duration_s > 5", "channels = 1", "format LIKE 'WAV%'", "sample_rate = 16000", "modified_at > DATE '2000-01-01'"],
)
def test_every_documented_recording_column_filters(small_archive, where):
    archive, _ = small_archive
    allowed = allowed_window_ids(archive, SearchFilters(where=where))
    assert np.array_equal(np.sort(allowed), np.sort(archive.catalog.all_window_ids()))
    assert len(search_text(archive, "tone 440", k=5, filters=SearchFilters(where=where))) == 2


# --- one request cannot take the machine -----------------------------------------------------------


def _long_wav(path: Path, minutes: int, rate: int = 8000) -> Path:
    import soundfile as sf

    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as fh:
        t = np.arange(rate * 60) / rate
        minute = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for _ in range(minutes):
            fh.write(minute)
    return path


def test_classify_and_query_by_example_stream_a_long_file(small_archive, tmp_path):
    import tracemalloc

    from indexer.classify.zero_shot import classify_file
    from indexer.search.queries import ClipSpec, clip_query

    archive, _ = small_archive
    path = _long_wav(tmp_path / "long.wav", 30)
    full_size = 30 * 60 * 48_000 * 4  # the whole file at 48 kHz float32: 345 MB
    for request in (lambda: classify_file(path, "tone 440, tone 1200", FakeEncoder()), lambda: clip_query(archive, ClipSpec(path))):
        tracemalloc.start()
        result = request()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert result is not None
        assert peak < full_size / 4, f"peak {peak / 1e6:.0f} MB"
    assert classify_file(path, "tone 440, tone 1200", FakeEncoder()).duration_s == pytest.approx(1800, abs=1)


def test_a_request_longer_than_its_limit_is_refused_in_one_sentence(small_archive, tmp_path):
    from indexer.classify.zero_shot import ClassifyOptions, classify_file
    from indexer.config import DecodeOptions
    from indexer.errors import AudioTooLongError
    from indexer.search.queries import ClipSpec, clip_query

    archive, _ = small_archive
    path = _long_wav(tmp_path / "two-minutes.wav", 2)
    short = DecodeOptions(max_duration_s=60)
    with pytest.raises(AudioTooLongError, match="more than the 60 s limit"):
        classify_file(path, "a, b", FakeEncoder(), ClassifyOptions(decode=short))
    with pytest.raises(AudioTooLongError, match="more than the 60 s limit"):
        clip_query(archive, ClipSpec(path), short)
    assert clip_query(archive, ClipSpec(path, 30.0, 50.0), short)[0].shape == (FakeEncoder().identity.dim,)


def test_an_upload_error_names_the_users_file_not_the_servers(tmp_path):
    from indexer.classify.zero_shot import classify_file
    from indexer.errors import AudioError
    from search_app.tempfiles import upload_as_file

    with pytest.raises(AudioError) as info:
        with upload_as_file(b"RIFF\x00\x00\x00\x00WAVEjunk" * 20, "Call 0042.wav") as path:
            classify_file(path, "a, b", FakeEncoder())
    message = str(info.value)
    assert "Call 0042.wav" in message
    assert "soundtrace-upload" not in message and str(Path(path).parent) not in message
    assert not Path(path).exists()


def test_the_catalog_is_free_while_a_slow_first_file_is_embedded(tmp_path):
    """Readers got in only at the first commit: one slow file kept an app page waiting 33 s."""
    from indexer.archive.catalog import Catalog
    from tests.test_pipeline import worker_code

    (tmp_path / "drop").mkdir()
    long_file = _long_wav(tmp_path / "drop" / "long.wav", 6)
    arch, marker = tmp_path / "arch", tmp_path / "marker"
    code = worker_code(arch, long_file, marker).replace("0.02", "0.5")
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        while not marker.exists() and writer.poll() is None:
            time.sleep(0.01)
        assert writer.poll() is None
        started = time.monotonic()
        catalog = Catalog.open(arch, read_only=True, wait_s=5.0)
        waited = time.monotonic() - started
        assert catalog.one("SELECT count(*) FROM windows")[0] == 0  # the file is still being embedded
        catalog.close()
        assert waited < 2.0, f"waited {waited:.1f} s for the catalog"
    finally:
        assert writer.wait(timeout=300) == 0


class _NanForLoud(FakeEncoder):
    """A model that, like CLAP on absurd input, returns NaN for some windows (here: loud ones)."""

    batch_size = 4

    def embed_audio(self, windows):
        out = super().embed_audio(windows)
        for i, w in enumerate(windows):
            if np.abs(w).max() > 0.8:
                out[i] = np.nan
        return out


def test_a_file_whose_vectors_are_not_finite_fails_and_its_batch_peers_are_kept(tmp_path):
    import soundfile as sf

    drop = tmp_path / "drop"
    write_sequence(drop / "a.wav", [(440, 10)])
    t = np.arange(16_000 * 25) / 16_000
    loud = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    loud[16_000 * 12 :] *= 3.0  # the second and third windows are loud
    sf.write(drop / "b.wav", loud, 16_000)
    write_sequence(drop / "c.wav", [(1200, 10)])  # shares b's last batch
    with Archive.open(tmp_path / "arch", encoder=_NanForLoud(), create=True) as archive:
        report = archive.index([drop])
        stored = archive.window_vectors(archive.catalog.all_window_ids())
        outcomes = _outcomes(archive)
    assert report.indexed == 2 and [Path(f.path).name for f in report.failed] == ["b.wav"]
    status, kind, error = outcomes[str((drop / "b.wav").resolve())]
    assert (status, kind) == ("failed", "invalid_vector") and "no usable vector for 10.0–20.0 s" in error
    assert np.isfinite(stored).all() and len(stored) == 2


def test_filters_run_under_a_memory_limit_that_is_then_lifted(small_archive):
    archive, _ = small_archive
    before = archive.catalog.one("SELECT current_setting('memory_limit')")[0]
    with archive.catalog.memory_limit("1GB"):
        assert archive.catalog.one("SELECT current_setting('memory_limit')")[0] in ("953.6 MiB", "1.0 GiB", "1000.0 MB")
    assert archive.catalog.one("SELECT current_setting('memory_limit')")[0] == before


def test_a_folder_holding_no_audio_says_so(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no audio here")
    result = subprocess.run(
        [sys.executable, "-c", CLI_WITH_FAKE, str(tmp_path / "notes"), str(tmp_path / "arch")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "found no audio files to index (1 files without an audio extension were left out" in result.stderr
