"""What the app serves: audio only for catalogued recordings by id, exact spans; uploads never linger."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from indexer import Archive
from indexer.config import SAMPLE_RATE
from indexer.errors import QueryError
from search_app.media import MAX_SPAN_S, window_audio
from search_app.tempfiles import export_bytes, upload_as_file
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    write_sequence(folder / "tones.wav", [(440, 6), (0, 2), (2000, 6)])
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    with Archive.open(tmp_path_factory.mktemp("arch"), encoder=FakeEncoder(), create=True) as built:
        report = built.index([folder])
        assert report.indexed == 1 and len(report.failed) == 1
    opened = Archive.open(built.directory, encoder=FakeEncoder(), read_only=True)
    yield opened
    opened.close()


def recording_id(archive, name: str) -> int:
    return archive.catalog.one("SELECT id FROM recordings WHERE file_name = ?", [name])[0]


def decoded(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


@pytest.mark.parametrize(("start", "end"), [(0.0, 1.0), (1.25, 3.75), (5.5, 8.5), (0.0, 14.0)])
def test_a_real_recording_gives_wav_bytes_of_exactly_the_span(archive, start, end):
    samples, rate = decoded(window_audio(archive, recording_id(archive, "tones.wav"), start, end))
    assert rate == SAMPLE_RATE and samples.ndim == 1
    assert len(samples) == round((end - start) * SAMPLE_RATE)


def test_the_span_holds_the_audio_at_that_time(archive):
    rec = recording_id(archive, "tones.wav")
    tone, _ = decoded(window_audio(archive, rec, 1.0, 2.0))
    silence, _ = decoded(window_audio(archive, rec, 6.5, 7.5))
    high, _ = decoded(window_audio(archive, rec, 10.0, 11.0))
    spectrum = np.abs(np.fft.rfft(tone))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(tone) - 440) < 2
    assert abs(np.argmax(np.abs(np.fft.rfft(high))) * SAMPLE_RATE / len(high) - 2000) < 2
    assert np.abs(silence).max() < 1e-3 < np.abs(tone).max()


@pytest.mark.parametrize(
    "crafted",
    [999, 0, -1, -(2**63), 2**63, 2**80, "1", "../../etc/passwd", "/etc/passwd", 1.0, True, None, b"1", [1]],
)
def test_anything_but_a_catalogued_recording_id_gets_no_audio(archive, crafted):
    with pytest.raises(QueryError):
        window_audio(archive, crafted, 0.0, 1.0)


def test_a_recording_that_failed_to_index_gets_no_audio(archive):
    with pytest.raises(QueryError, match="not indexed"):
        window_audio(archive, recording_id(archive, "broken.wav"), 0.0, 1.0)


@pytest.mark.parametrize(
    ("start", "end", "channel"),
    [(2.0, 1.0, 0), (1.0, 1.0, 0), (-1.0, 1.0, 0), (0.0, MAX_SPAN_S + 1, 0), (float("nan"), 1.0, 0),
     (0.0, float("inf"), 0), ("0", "1", 0), (0.0, 1.0, 1), (0.0, 1.0, -1), (0.0, 1.0, "0")],
)  # fmt: skip
def test_bad_ranges_and_channels_get_no_audio(archive, start, end, channel):
    with pytest.raises(QueryError):
        window_audio(archive, recording_id(archive, "tones.wav"), start, end, channel)


def test_numpy_integers_from_a_dataframe_are_accepted(archive):
    rec = np.int64(recording_id(archive, "tones.wav"))
    assert len(decoded(window_audio(archive, rec, np.float64(0.0), np.float32(0.5)))[0]) == SAMPLE_RATE // 2


def test_an_upload_is_a_temp_file_with_only_its_extension_and_is_deleted(tmp_path):
    with upload_as_file(b"abc", "../../etc/evil name.FLAC") as path:
        assert path.read_bytes() == b"abc" and path.suffix == ".flac"
        assert path.parent == Path(tempfile.gettempdir()) and "evil" not in path.name
        kept = path
    assert not kept.exists()
    with pytest.raises(RuntimeError), upload_as_file(b"abc", "clip.wav") as path:
        kept = path
        raise RuntimeError("the engine failed")
    assert not kept.exists()
    with upload_as_file(b"abc", "no-extension.;rm -rf") as path:
        assert path.suffix == ""


def test_an_export_download_is_the_csv_and_leaves_no_file(archive, tmp_path, monkeypatch):
    from indexer.audit.runner import run_audit
    from indexer.audit.labelset import inline_labelset

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    archive.catalog.yield_lock()  # one process cannot read and write the catalog at once
    with Archive.open(archive.directory, encoder=FakeEncoder()) as writable:
        run = run_audit(writable, inline_labelset("tone 440, tone 2000"))
        data = export_bytes(writable.catalog, run.id)
    assert data.decode().splitlines()[0].startswith('"file","best_label","score"')
    assert os.listdir(tmp_path) == []


def test_the_score_histogram_counts_whole_recordings():
    from search_app.plots import histogram_figure

    fig = histogram_figure(np.array([0.10, 0.12, 0.31]), 0.2, "tone")
    ticks = fig.axes[0].get_yticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks)


def test_a_highlight_band_at_the_end_reaches_the_edge_of_the_waveform():
    from search_app.plots import waveform_figure

    samples = np.zeros(SAMPLE_RATE * 4, np.float32)
    fig = waveform_figure(samples, SAMPLE_RATE, (3.0, 4.0))
    left, right = fig.axes[0].get_xlim()
    assert (left, right) == (0.0, 4.0)
