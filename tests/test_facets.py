"""Engine pieces behind the app's filters and charts: facets, picks bound as parameters, audit summaries."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from indexer import Archive

from indexer.audit import saved_runs as audit_runs
from indexer.audit.runner import run_audit
from indexer.errors import AuditError, FilterError
from indexer.search.facets import Facet, filter_facets, picks_from_choices
from indexer.audit.labelset import inline_labelset
from indexer.search.filtering import SearchFilters
from indexer.search.ranking import allowed_window_ids, search_text
from tests.audio_factory import write_sequence
from tests.fakes import BAND_EDGES, FakeEncoder

CENTRES = np.sqrt(BAND_EDGES[:-1] * BAND_EDGES[1:])
LOW, MID, HIGH = (int(round(CENTRES[i])) for i in (6, 8, 11))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recs")
    for name, freq in (("a", LOW), ("b", MID), ("c", HIGH), ("d", MID), ("e", LOW)):
        write_sequence(folder / f"{name}.wav", [(freq, 10)])
    (folder / "meta.csv").write_text(
        "file,site,agent,date,note\n"
        "a.wav,leeds,A1,2024-01-01,x1\nb.wav,porto,A2,2024-01-02,x2\nc.wav,o'hare,A1,2024-01-09,x3\n"
        "d.wav,leeds,,2024-01-10,x4\n"
    )
    opened = Archive.open(tmp_path_factory.mktemp("arch"), encoder=FakeEncoder(), create=True)
    opened.catalog.import_metadata(folder / "meta.csv")
    opened.index([folder])
    yield opened
    opened.close()


def files(archive, picks):
    hits = search_text(archive, f"tone {MID}", k=10, filters=SearchFilters(picks=picks))
    return sorted(h.path.rsplit("/", 1)[-1] for h in hits)


def test_facets_offer_pick_lists_for_few_values_and_ranges_for_dates(archive):
    facets = {f.column: f for f in filter_facets(archive.catalog, max_choices=3)}
    assert facets["site"] == Facet("site", "choice", ("leeds", "o'hare", "porto"))
    assert facets["agent"] == Facet("agent", "choice", ("A1", "A2"))
    assert facets["date"] == Facet("date", "date", low=date(2024, 1, 1), high=date(2024, 1, 10))
    assert "note" not in facets  # four values: more than max_choices


def test_no_picks_means_no_filter(archive):
    columns = archive.catalog.view_columns()
    assert not picks_from_choices(columns)
    assert not picks_from_choices(columns, {"site": []}, {"date": (None, None)})
    assert allowed_window_ids(archive, SearchFilters(picks=picks_from_choices(columns))) is None


def test_picks_become_a_filter_that_narrows_the_search(archive):
    columns = archive.catalog.view_columns()
    assert files(archive, picks_from_choices(columns, {"site": ["leeds", "o'hare"]})) == ["a.wav", "c.wav", "d.wav"]
    assert files(archive, picks_from_choices(columns, {"SITE": ["leeds"]}, {"date": ("2024-01-05", None)})) == ["d.wav"]
    assert files(archive, picks_from_choices(columns, dates={"date": (date(2024, 1, 2), date(2024, 1, 9))})) == ["b.wav", "c.wav"]
    assert files(archive, picks_from_choices(columns, exclude_true=["is_clipped", "is_silent"])) == [f"{n}.wav" for n in "abcde"]


def test_picks_describe_themselves_and_survive_json(archive):
    from indexer.search.filtering import Picks

    picks = picks_from_choices(archive.catalog.view_columns(), {"site": ["leeds", "o'hare"]}, {"date": ("2024-01-05", None)}, ["is_silent"])
    assert picks.describe() == "site: leeds, o'hare · date 2024-01-05 – … · not is_silent"
    assert Picks.from_json(picks.to_json()) == picks
    filters = SearchFilters(where="agent = 'A1'", since="2024-01-01", picks=picks)
    assert SearchFilters.from_json(filters.to_json()) == SearchFilters(where="agent = 'A1'", since="2024-01-01", picks=picks)


@pytest.mark.parametrize(
    "hostile",
    ["leeds' OR 1=1 --", "x'); DROP TABLE recordings; --", "leeds\\' OR '1'='1", "' || (SELECT 1) || '", "porto%"],
)
def test_picked_values_are_only_ever_bound_parameters(archive, hostile):
    from indexer.search.filtering import recording_filter

    picks = picks_from_choices(archive.catalog.view_columns(), {"site": [hostile, "porto"]})
    compiled = recording_filter(archive.catalog, SearchFilters(picks=picks))
    assert hostile not in compiled.sql and compiled.params == (hostile, "porto")
    assert files(archive, picks) == ["b.wav"]
    assert archive.catalog.one("SELECT count(*) FROM recordings")[0] == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"choices": {'site" OR 1=1 --': ["x"]}}, "Unknown column"),
        ({"choices": {"path; DROP TABLE windows": ["x"]}}, "Unknown column"),
        ({"dates": {"date": ("2024-13-01", None)}}, "not a date"),
        ({"dates": {"date": ("2024-01-01'; --", None)}}, "not a date"),
        ({"exclude_true": ["site"]}, "yes/no"),
    ],
)
def test_anything_but_known_columns_and_plain_values_is_refused(archive, kwargs, message):
    with pytest.raises(FilterError, match=message):
        picks_from_choices(archive.catalog.view_columns(), **kwargs)


# --- audit summaries for the dashboard and the threshold histogram -------------------------------


@pytest.fixture(scope="module")
def run(archive):
    return run_audit(archive, inline_labelset(f"tone {LOW}, tone {MID}", mode="multi-label", threshold="top 40%"))


def test_score_spread_holds_every_recording_and_the_threshold_as_a_score(archive, run):
    spread = audit_runs.score_spread(archive.catalog, run.id, f"tone {MID}")
    assert len(spread.scores) == 5 and list(spread.scores) == sorted(spread.scores)
    flagged = [c for c in audit_runs.label_counts(archive.catalog, run.id) if c.label == f"tone {MID}"][0]
    assert spread.at_or_above(spread.threshold) == flagged.flagged_recordings == 2
    assert spread.percentile(spread.threshold) == pytest.approx(100.0)
    assert spread.percentile(-2.0) == 0.0 and spread.at_or_above(-2.0) == 5
    with pytest.raises(AuditError, match="no label"):
        audit_runs.score_spread(archive.catalog, run.id, "siren")


def test_a_cosine_threshold_is_the_spread_threshold(archive):
    fixed = run_audit(archive, inline_labelset(f"tone {LOW}, tone {HIGH}", mode="multi-label", threshold=0.5))
    assert audit_runs.score_spread(archive.catalog, fixed.id, f"tone {HIGH}").threshold == 0.5


def test_flagged_counts_over_time_and_by_column_add_up(archive, run):
    total = {c.label: c.flagged_recordings for c in audit_runs.label_counts(archive.catalog, run.id)}
    daily = audit_runs.flagged_over_time(archive.catalog, run.id, "day").to_pylist()
    assert [r["period"] for r in daily] == [date(2024, 1, d) for d in range(1, 11) for _ in total]  # e.wav: no date
    empty = [r for r in daily if r["period"] not in {date(2024, 1, d) for d in (1, 2, 9, 10)}]
    assert empty and all(r["flagged"] == r["scored"] == 0 for r in empty)  # days without recordings are zeros
    for label, count in total.items():
        assert sum(r["flagged"] for r in daily if r["label"] == label) <= count
    weekly = audit_runs.flagged_over_time(archive.catalog, run.id, "week").to_pylist()
    assert {r["period"] for r in weekly} == {date(2024, 1, 1), date(2024, 1, 8)}  # Mondays
    by_site = audit_runs.flagged_by(archive.catalog, run.id, "site").to_pylist()
    assert {r["value"] for r in by_site} == {"leeds", "porto", "o'hare", "(none)"}
    for label, count in total.items():
        assert sum(r["flagged"] for r in by_site if r["label"] == label) == count
        assert sum(r["scored"] for r in by_site if r["label"] == label) == 5
    modified = audit_runs.flagged_over_time(archive.catalog, run.id, "month", column="modified_at").to_pylist()
    assert sum(r["scored"] for r in modified) == 10


def test_summaries_refuse_unknown_periods_and_columns(archive, run):
    with pytest.raises(AuditError, match="period"):
        audit_runs.flagged_over_time(archive.catalog, run.id, "fortnight'; --")
    with pytest.raises(AuditError, match="Unknown column"):
        audit_runs.flagged_by(archive.catalog, run.id, 'site" --')
