"""Search, grouping and filters with the fake encoder: exact rankings and time ranges."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import Archive
from indexer.errors import FilterError, QueryError
from indexer.search.filtering import SearchFilters
from indexer.search.queries import ClipSpec, parse_clip_spec
from indexer.search.ranking import search_like, search_text, search_vector, search_window
from tests.audio_factory import RATE, tone, write_sequence
from tests.fakes import BAND_EDGES, FakeEncoder

CENTRES = np.sqrt(BAND_EDGES[:-1] * BAND_EDGES[1:])
LOW, MID, HIGH = (float(round(CENTRES[i])) for i in (6, 8, 11))


def label(frequency: float) -> str:
    return f"tone {int(frequency)}"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """a: LOW | MID | HIGH; b: MID+HIGH equal mix (cos 0.707 to MID); c: HIGH | MID+0.5·LOW (cos 0.894)."""
    folder = tmp_path_factory.mktemp("recs")
    write_sequence(folder / "a.wav", [(LOW, 10), (MID, 10), (HIGH, 10)])
    import soundfile as sf

    sf.write(folder / "b.wav", tone(MID, 10) + tone(HIGH, 10), RATE)
    sf.write(folder / "c.wav", np.concatenate([tone(HIGH, 10), tone(MID, 10) + tone(LOW, 10, amplitude=0.25)]), RATE)
    (folder / "meta.csv").write_text("file,agent,date\na.wav,A1,2024-01-01\nb.wav,A2,2024-02-01\nc.wav,A1,2024-03-01\n")
    archive = Archive.open(tmp_path_factory.mktemp("arch"), encoder=FakeEncoder(), create=True)
    archive.catalog.import_metadata(folder / "meta.csv")
    report = archive.index([folder])
    assert report.indexed == 3 and not report.failed
    yield archive
    archive.close()


def names(hits):
    return [h.path.rsplit("/", 1)[-1] for h in hits]


def test_ranking_and_time_of_best_window(archive):
    hits = search_text(archive, label(MID), k=3)
    assert names(hits) == ["a.wav", "c.wav", "b.wav"]
    assert [(h.best.start_s, h.best.end_s) for h in hits] == [(10, 20), (10, 20), (0, 10)]
    assert hits[0].score == pytest.approx(1.0, abs=0.01)
    assert hits[1].score == pytest.approx(np.sqrt(0.8), abs=0.01)
    assert hits[2].score == pytest.approx(np.sqrt(0.5), abs=0.01)
    assert [h.rank for h in hits] == [1, 2, 3]


def test_windows_grouped_per_recording_best_first(archive):
    hits = search_text(archive, label(HIGH), k=3, windows_per_recording=3)
    by_name = dict(zip(names(hits), hits))
    assert (by_name["a.wav"].best.start_s, by_name["a.wav"].best.end_s) == (20, 30)
    assert (by_name["c.wav"].best.start_s, by_name["c.wav"].best.end_s) == (0, 10)
    for hit in hits:
        scores = [w.score for w in hit.windows]
        assert scores == sorted(scores, reverse=True)
        assert len({w.window_id for w in hit.windows}) == len(hit.windows)
    assert len(by_name["a.wav"].windows) == 3


def test_k_limits_recordings_not_windows(archive):
    assert names(search_text(archive, label(MID), k=1)) == ["a.wav"]
    assert len(search_text(archive, label(MID), k=50)) == 3


def test_where_filters_on_metadata(archive):
    hits = search_text(archive, label(MID), k=10, filters=SearchFilters(where="agent = 'A1'"))
    assert names(hits) == ["a.wav", "c.wav"]
    assert hits[0].metadata["agent"] == "A1"


def test_since_until_use_the_metadata_date(archive):
    hits = search_text(archive, label(MID), k=10, filters=SearchFilters(since="2024-02-01"))
    assert names(hits) == ["c.wav", "b.wav"]
    hits = search_text(archive, label(MID), k=10, filters=SearchFilters(since="2024-01-15", until="2024-02-15"))
    assert names(hits) == ["b.wav"]


def test_filter_matching_nothing_returns_nothing(archive):
    assert search_text(archive, label(MID), filters=SearchFilters(where="agent = 'nobody'")) == []


def test_hostile_where_is_refused(archive):
    with pytest.raises(FilterError):
        search_text(archive, label(MID), filters=SearchFilters(where="(SELECT count(*) FROM recordings) > 0"))
    with pytest.raises(FilterError):
        search_text(archive, label(MID), filters=SearchFilters(where="agnt = 'A1'"))
    with pytest.raises(FilterError):
        search_text(archive, label(MID), filters=SearchFilters(since="last tuesday"))


def test_more_like_this_window_excludes_itself(archive):
    a_mid = archive.catalog.con.execute(
        "SELECT w.id FROM windows w JOIN recordings r ON r.id = w.recording_id WHERE r.file_name = 'a.wav' AND w.start_s = 10"
    ).fetchone()[0]
    hits = search_window(archive, a_mid, k=2)
    assert names(hits)[0] == "c.wav"
    assert (hits[0].best.start_s, hits[0].best.end_s) == (10, 20)
    assert all(w.window_id != a_mid for h in hits for w in h.windows)


def test_query_by_example_file_range(archive):
    path = archive.catalog.con.execute("SELECT path FROM recordings WHERE file_name = 'a.wav'").fetchone()[0]
    hits = search_like(archive, parse_clip_spec(f"{path}:10-20"), k=3)
    assert names(hits)[:2] == ["c.wav", "b.wav"] or names(hits)[0] == "c.wav"
    a_hit = [h for h in hits if h.path == path]
    assert all(not (w.start_s < 20 and w.end_s > 10) for h in a_hit for w in h.windows)


def test_parse_clip_spec():
    assert parse_clip_spec("calls/0042.wav:30-40") == ClipSpec(parse_clip_spec("calls/0042.wav").path, 30.0, 40.0)
    assert parse_clip_spec("x.wav:12.5").start_s == 12.5
    assert parse_clip_spec("C:/odd:name.wav").start_s is None
    with pytest.raises(QueryError):
        parse_clip_spec("x.wav:40-30")


def test_empty_query_is_an_error(archive):
    with pytest.raises(QueryError):
        search_text(archive, "   ")


def test_search_vector_on_empty_archive(tmp_path):
    with Archive.open(tmp_path / "empty", encoder=FakeEncoder(), create=True) as empty:
        assert search_vector(empty, np.ones(empty.manifest.dim, np.float32), k=5) == []
