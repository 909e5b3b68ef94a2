"""Refining hits to short spans with the fake encoder: exact spans, channels, batching, errors.

With the fake encoder a 2 s sub-window holding 1 s of the 1200 Hz tone and 1 s of 440 Hz scores
sqrt(0.5) against "tone 1200"; three such sub-windows (hop 0.5 s) surround a 1 s event, so the
span is exactly the 3 s from 1 s before the event to 1 s after it.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from indexer import Archive, IndexOptions
from indexer.config import DecodeOptions, RawPcmFormat
from indexer.errors import AudioError, QueryError
from indexer.search.highlight import Highlight, HighlightConfig, _highlight, _Plan, refine, refine_hits
from indexer.search.ranking import search_text, search_window
from indexer.audio.windows import Window, WindowQuality
from tests.audio_factory import RATE, tone, write_sequence
from tests.fakes import FakeEncoder

A, EVENT = 440.0, 1200.0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recs")
    write_sequence(folder / "short.wav", [(A, 6), (EVENT, 1), (A, 3)])  # event at 6–7 s of a 10 s file
    write_sequence(folder / "long.wav", [(A, 12), (EVENT, 1), (A, 17)])  # event at 12–13 s of 30 s
    write_sequence(folder / "pure.wav", [(EVENT, 10)])
    return folder


@pytest.fixture(scope="module")
def archive(folder, tmp_path_factory):
    archive = Archive.open(tmp_path_factory.mktemp("arch"), encoder=FakeEncoder(), create=True)
    report = archive.index([folder])
    assert report.indexed == 3 and not report.failed
    yield archive
    archive.close()


def rec_id(archive, name: str) -> int:
    return archive.catalog.one("SELECT id FROM recordings WHERE file_name = ?", [name])[0]


def query(text: str = "tone 1200") -> np.ndarray:
    return FakeEncoder().embed_text([text])[0]


def test_span_covers_the_planted_event(archive):
    h = refine(archive, rec_id(archive, "short.wav"), 0.0, 10.0, query())
    assert isinstance(h, Highlight)
    assert (h.recording_id, h.channel, h.window_start_s, h.window_end_s) == (rec_id(archive, "short.wav"), 0, 0.0, 10.0)
    assert h.start_s <= 6.0 and h.end_s >= 7.0
    assert 1.0 <= h.end_s - h.start_s <= 3.0
    assert (h.start_s, h.end_s) == pytest.approx((5.0, 8.0))
    assert h.score == pytest.approx(np.sqrt(0.5), abs=0.02)


def test_absolute_times_in_a_later_window(archive):
    rid = rec_id(archive, "long.wav")
    hits = [h for h in search_text(archive, "tone 1200", k=3) if h.recording_id == rid]
    assert (hits[0].best.start_s, hits[0].best.end_s) == (10.0, 20.0)
    h = refine(archive, rid, hits[0].best.start_s, hits[0].best.end_s, query())
    assert (h.start_s, h.end_s) == pytest.approx((11.0, 14.0))
    assert (h.window_start_s, h.window_end_s) == (10.0, 20.0)


def test_fine_sub_windows_find_the_event_itself(archive):
    config = HighlightConfig(sub_window_s=0.5, hop_s=0.25)
    h = refine(archive, rec_id(archive, "long.wav"), 10.0, 20.0, query(), config=config)
    assert (h.start_s, h.end_s) == pytest.approx((12.0, 13.0))
    assert h.score == pytest.approx(1.0, abs=0.02)


def test_query_by_example_with_a_window_vector(archive):
    pure = archive.catalog.one("SELECT id FROM windows WHERE recording_id = ?", [rec_id(archive, "pure.wav")])[0]
    h = refine(archive, rec_id(archive, "short.wav"), 0.0, 10.0, archive.window_vectors([pure])[0])
    assert (h.start_s, h.end_s) == pytest.approx((5.0, 8.0))
    assert search_window(archive, pure, k=1)  # the same vector works as a search query


def test_range_shorter_than_a_sub_window_is_one_sub_window(archive):
    fake = archive.encoder
    before = fake.windows_embedded
    h = refine(archive, rec_id(archive, "short.wav"), 6.2, 7.4, query())
    assert fake.windows_embedded - before == 1
    assert (h.start_s, h.end_s) == pytest.approx((6.2, 7.4))
    assert h.score == pytest.approx(np.sqrt(0.8 / 1.2), abs=0.02)  # 0.8 s of the event, 0.4 s of 440 Hz


def test_span_never_leaves_a_window_shorter_than_min_span(archive):
    h = refine(archive, rec_id(archive, "short.wav"), 6.5, 7.0, query())
    assert (h.start_s, h.end_s) == pytest.approx((6.5, 7.0))


# --- channels ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_archive(tmp_path_factory):
    """Stereo: 440 Hz on both channels, 1200 Hz on the right only at 3–4 s; indexed split."""
    folder = tmp_path_factory.mktemp("stereo")
    left = tone(A, 10)
    right = np.concatenate([tone(A, 3), tone(EVENT, 1), tone(A, 6)])
    sf.write(folder / "call.wav", np.stack([left, right], axis=1), RATE)
    archive = Archive.open(tmp_path_factory.mktemp("arch-split"), encoder=FakeEncoder(), create=True)
    report = archive.index([folder], IndexOptions(decode=DecodeOptions(channels="split")))
    assert report.indexed == 1
    yield archive
    archive.close()


def test_split_channels_are_refined_separately(split_archive):
    rid = rec_id(split_archive, "call.wav")
    right = refine(split_archive, rid, 0.0, 10.0, query(), channel=1)
    left = refine(split_archive, rid, 0.0, 10.0, query(), channel=0)
    assert right.channel == 1 and left.channel == 0
    assert (right.start_s, right.end_s) == pytest.approx((2.0, 5.0))
    assert right.score == pytest.approx(np.sqrt(0.5), abs=0.02)
    assert left.score < 0.1 < right.score - 0.5


def test_refine_hits_uses_each_hits_channel(split_archive):
    hits = search_text(split_archive, "tone 1200", k=1)
    assert hits[0].best.channel == 1
    found = refine_hits(split_archive, hits, query())
    assert found[hits[0].recording_id].channel == 1
    assert (found[hits[0].recording_id].start_s, found[hits[0].recording_id].end_s) == pytest.approx((2.0, 5.0))


def test_channel_beyond_the_indexed_ones_is_refused(archive, split_archive):
    with pytest.raises(QueryError, match="channel"):
        refine(archive, rec_id(archive, "short.wav"), 0.0, 10.0, query(), channel=1)
    with pytest.raises(QueryError, match="channel"):
        refine(split_archive, rec_id(split_archive, "call.wav"), 0.0, 10.0, query(), channel=2)


# --- batching ----------------------------------------------------------------------------------


def test_refine_hits_embeds_every_hit_in_one_call(archive):
    hits = search_text(archive, "tone 1200", k=3)
    assert len(hits) == 3
    fake = archive.encoder
    calls, embedded = fake.audio_calls, fake.windows_embedded
    found = refine_hits(archive, hits, query())
    assert fake.audio_calls - calls == 1
    assert fake.windows_embedded - embedded == 3 * 17  # 2 s every 0.5 s over 10 s
    assert set(found) == {h.recording_id for h in hits}
    short, long = found[rec_id(archive, "short.wav")], found[rec_id(archive, "long.wav")]
    assert (short.start_s, short.end_s) == pytest.approx((5.0, 8.0))
    assert (long.start_s, long.end_s) == pytest.approx((11.0, 14.0))
    assert found[rec_id(archive, "pure.wav")].score == pytest.approx(1.0, abs=0.01)


def test_top_limits_the_work(archive):
    hits = search_text(archive, "tone 1200", k=3)
    fake = archive.encoder
    calls, embedded = fake.audio_calls, fake.windows_embedded
    found = refine_hits(archive, hits, query(), top=1)
    assert list(found) == [hits[0].recording_id]
    assert (fake.audio_calls - calls, fake.windows_embedded - embedded) == (1, 17)
    assert refine_hits(archive, hits, query(), top=0) == {}
    assert fake.audio_calls - calls == 1
    with pytest.raises(QueryError):
        refine_hits(archive, hits, query(), top=-1)


# --- errors ------------------------------------------------------------------------------------


def test_unknown_recording_is_a_query_error(archive):
    with pytest.raises(QueryError, match="no recording 9999"):
        refine(archive, 9999, 0.0, 10.0, query())


def test_wrong_query_dimension_is_a_query_error(archive):
    with pytest.raises(QueryError, match="dimensions"):
        refine(archive, rec_id(archive, "short.wav"), 0.0, 10.0, np.ones(5, np.float32))
    with pytest.raises(QueryError, match="dimensions"):
        refine_hits(archive, search_text(archive, "tone 1200", k=1), np.ones((2, 16), np.float32))
    with pytest.raises(QueryError, match="zero"):
        refine(archive, rec_id(archive, "short.wav"), 0.0, 10.0, np.zeros(16, np.float32))


def test_backwards_range_and_bad_config_are_query_errors(archive):
    with pytest.raises(QueryError, match="range"):
        refine(archive, rec_id(archive, "short.wav"), 5.0, 5.0, query())
    with pytest.raises(QueryError):
        HighlightConfig(min_span_s=4.0, max_span_s=3.0)
    with pytest.raises(QueryError):
        HighlightConfig(hop_s=3.0)


def test_missing_file_is_an_audio_error(tmp_path):
    write_sequence(tmp_path / "recs" / "gone.wav", [(A, 6), (EVENT, 1), (A, 3)])
    write_sequence(tmp_path / "recs" / "kept.wav", [(EVENT, 10)])
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([tmp_path / "recs"])
        hits = search_text(archive, "tone 1200", k=2)
        (tmp_path / "recs" / "gone.wav").unlink()
        with pytest.raises(AudioError, match="gone"):
            refine(archive, rec_id(archive, "gone.wav"), 0.0, 10.0, query())
        with pytest.raises(AudioError, match="gone"):
            refine_hits(archive, hits, query())
        found = refine_hits(archive, hits, query(), skip_unreadable=True)
        assert list(found) == [rec_id(archive, "kept.wav")]


def test_unreadable_file_is_an_audio_error(tmp_path):
    write_sequence(tmp_path / "recs" / "bad.wav", [(EVENT, 10)])
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([tmp_path / "recs"])
        (tmp_path / "recs" / "bad.wav").write_bytes(b"RIFF" + b"\0" * 40)
        with pytest.raises(AudioError):
            refine(archive, rec_id(archive, "bad.wav"), 0.0, 10.0, query())


# --- the span rule on its own ------------------------------------------------------------------


def plan(starts, length=2.0, window=(0.0, 10.0)) -> _Plan:
    quality = WindowQuality(0.0, 0.0, 0.0, 0.0)
    subs = [Window(0, s, min(s + length, window[1]), np.zeros(1, np.float32), quality) for s in starts]
    return _Plan(1, 0, window[0], window[1], window[1], subs)


def span(starts, scores, config=HighlightConfig(), **kw):
    h = _highlight(plan(starts, **kw), np.array(scores), config)
    return h.start_s, h.end_s


def test_ties_go_to_the_earliest_and_growth_stops_at_max_span():
    starts = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert span(starts, [0.1, 0.9, 0.9, 0.9, 0.9]) == (0.5, 3.5)  # best 0.5–2.5, grows right twice
    assert span(starts, [0.9, 0.5, 0.5, 0.5, 0.9]) == (0.0, 2.0)  # the earlier of two equal bests


def test_growth_prefers_the_higher_neighbour_then_the_left():
    starts = [0.0, 0.5, 1.0, 1.5, 2.0]
    room_for_one = HighlightConfig(max_span_s=2.5)
    assert span(starts, [0.0, 0.89, 0.9, 0.895, 0.0], room_for_one) == (1.0, 3.5)  # right scores higher
    assert span(starts, [0.0, 0.89, 0.9, 0.89, 0.0], room_for_one) == (0.5, 3.0)  # equal: the left
    assert span(starts, [0.0, 0.89, 0.9, 0.895, 0.0]) == (0.5, 3.5)  # room for both
    assert span(starts, [0.0, 0.85, 0.9, 0.85, 0.0]) == (1.0, 3.0)  # neither within the margin


def test_long_sub_window_is_cut_to_max_span_around_its_centre():
    config = HighlightConfig(sub_window_s=4.0, hop_s=1.0)
    assert span([0.0, 1.0, 2.0], [0.1, 0.9, 0.1], config, length=4.0) == (1.5, 4.5)


def test_short_span_widens_to_min_span_inside_the_window():
    config = HighlightConfig(sub_window_s=0.5, hop_s=0.5, min_span_s=2.0, margin=0.0)
    starts = [i * 0.5 for i in range(20)]
    scores = [0.0] * 20
    scores[9] = 1.0  # 4.5–5.0
    assert span(starts, scores, config, length=0.5) == (3.75, 5.75)
    scores = [0.0] * 20
    scores[0] = 1.0  # 0.0–0.5: shifted to start at the window's start
    assert span(starts, scores, config, length=0.5) == (0.0, 2.0)
    scores = [0.0] * 20
    scores[19] = 1.0  # 9.5–10.0: shifted to end at the window's end
    assert span(starts, scores, config, length=0.5) == (8.0, 10.0)


def test_raw_pcm_is_decoded_with_the_parameters_it_was_indexed_with(tmp_path):
    samples = np.concatenate([tone(A, 6), tone(EVENT, 1), tone(A, 3)])
    (tmp_path / "recs").mkdir()
    (tmp_path / "recs" / "line.raw").write_bytes((samples * 32767).astype("<i2").tobytes())
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        report = archive.index([tmp_path / "recs"], IndexOptions(decode=DecodeOptions(raw=RawPcmFormat(RATE))))
        assert report.indexed == 1
        h = refine(archive, rec_id(archive, "line.raw"), 0.0, 10.0, query())
        assert (h.start_s, h.end_s) == pytest.approx((5.0, 8.0))
