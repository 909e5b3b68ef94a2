"""Learned labels: marks kept in the catalog, a scorer fitted on them, and what to mark next.

With the deterministic fake encoder a pure tone's vector is the one-hot vector of its frequency
band, so "planted" event windows (a 2,500 Hz tone) have a known direction the text query
("siren": a fixed pseudo-random vector) does not point at.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from indexer import Archive, IndexOptions
from indexer.errors import MarkError
from indexer.learning.fit import FitOptions
from indexer.learning.learned import learn_label, newest_learned
from indexer.learning.marks import (
    label_summaries,
    mark_windows,
    marks_of,
    read_marks_csv,
)
from indexer.learning.suggest import suggest_windows
from indexer.search.queries import text_query
from indexer.search.ranking import search_vector
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder

EVENT_HZ = 2500
BACKGROUND_HZ = (200, 440, 700, 1000, 1500, 4000, 6000, 9000)


def _drop(folder):
    """12 files of six 10 s windows; files 0-7 have the event in one window each."""
    for i in range(12):
        tones = [BACKGROUND_HZ[(i + j) % len(BACKGROUND_HZ)] for j in range(6)]
        if i < 8:
            tones[i % 6] = EVENT_HZ
        write_sequence(folder / f"call{i:02d}.wav", [(f, 10) for f in tones])
    return folder


@pytest.fixture
def archive(tmp_path):
    drop = _drop(tmp_path / "drop")
    with Archive.open(tmp_path / "archive", encoder=FakeEncoder(), create=True) as a:
        a.index([drop])
        yield a


def _event_windows(archive):
    rows = archive.catalog.con.execute(
        "SELECT w.id, r.path FROM windows w JOIN recordings r ON r.id = w.recording_id ORDER BY w.id").fetchall()
    vectors = archive.window_vectors([r[0] for r in rows])
    event = np.argmax(FakeEncoder()._audio_vector(np.sin(2 * np.pi * EVENT_HZ * np.arange(48_000) / 48_000)))
    ids = [r[0] for r, v in zip(rows, vectors) if np.argmax(v) == event]
    others = [r[0] for r, v in zip(rows, vectors) if np.argmax(v) != event]
    return ids, others


def test_the_learned_label_ranks_the_unmarked_planted_windows_first(archive):
    events, others = _event_windows(archive)
    assert len(events) == 8
    text_ranked = [h.best.window_id for h in search_vector(archive, text_query(archive, "siren"), k=12, windows_per_recording=1)]
    assert set(text_ranked[:5]) != set(events[3:])  # the text query alone does not find them first
    mark_windows(archive, "siren", events[:3], True)
    mark_windows(archive, "siren", others[:6], False)
    report = learn_label(archive, "siren", FitOptions(weak_negatives=40))
    learned = report.learned
    assert (learned.version, learned.positives, learned.negatives, learned.weak_negatives) == (1, 3, 6, 40)
    hits = search_vector(archive, learned.scorer.direction, k=12, windows_per_recording=1)
    marked = set(events[:3]) | set(others[:6])
    unmarked_ranking = [h.best.window_id for h in hits if h.best.window_id not in marked]
    assert sorted(unmarked_ranking[:5]) == sorted(events[3:])  # ranks 1-5 of the unmarked: the five planted events
    evaluation = learned.evaluation
    assert evaluation.folds == 3 and evaluation.roc_auc == 1.0 and evaluation.roc_auc > evaluation.text_roc_auc


def test_learning_with_no_marks_equals_the_text_query(archive):
    learned = learn_label(archive, "siren").learned
    assert learned.positives == learned.negatives == 0 and learned.evaluation is None
    np.testing.assert_array_equal(learned.scorer.direction, text_query(archive, "siren"))
    plain = search_vector(archive, text_query(archive, "siren"), k=5)
    assert [h.best.window_id for h in search_vector(archive, learned.scorer.direction, k=5)] == [h.best.window_id for h in plain]


def test_each_fit_is_a_numbered_version_with_its_marks_hash(archive):
    events, others = _event_windows(archive)
    mark_windows(archive, "Siren", events[:2], True)
    mark_windows(archive, "siren", others[:2], False)
    first = learn_label(archive, "siren", FitOptions(weak_negatives=10)).learned
    mark_windows(archive, "siren", events[2:3], True, note="clear one")
    second = learn_label(archive, "SIREN", FitOptions(weak_negatives=10)).learned
    assert (first.version, second.version) == (1, 2) and first.marks_hash != second.marks_hash
    assert newest_learned(archive, "siren").version == 2 and newest_learned(archive, "siren", version=1).marks_hash == first.marks_hash
    [summary] = label_summaries(archive)
    assert (summary.label, summary.positives, summary.negatives, summary.versions) == ("Siren", 3, 2, 2)
    assert [m.note for m in marks_of(archive, "siren") if m.note] == ["clear one"]


def test_marking_a_window_again_takes_the_newest_verdict(archive):
    events, _ = _event_windows(archive)
    mark_windows(archive, "siren", events[:1], True)
    mark_windows(archive, "siren", events[:1], False)
    [mark] = marks_of(archive, "siren")
    assert mark.positive is False and mark.window_id == events[0]


def test_marks_follow_their_audio_through_reindexing_and_report_what_is_gone(tmp_path):
    drop = _drop(tmp_path / "drop")
    with Archive.open(tmp_path / "archive", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        events, _ = _event_windows(archive)
        mark_windows(archive, "siren", events[:2], True)
        first_path, second_path = (marks_of(archive, "siren")[i].path for i in range(2))
        moved = drop / "moved"
        moved.mkdir()
        shutil.move(first_path, moved / "renamed.wav")  # same content under another name
        write_sequence(drop / second_path.split("/")[-1], [(300, 10)] * 6)  # new content in the old file
        report = archive.index([drop], IndexOptions(prune=True))
        assert report.marks_unplaced == 1  # the rewritten file's mark; the moved one found its audio again
        marks = marks_of(archive, "siren")
        assert marks[0].window_id is not None and marks[0].window_id != events[0] and marks[0].path.endswith("renamed.wav")
        assert marks[1].window_id is None  # its audio is nowhere now: kept, reported as unplaced
        assert label_summaries(archive)[0].unplaced == 1
        assert learn_label(archive, "siren", FitOptions(weak_negatives=5)).unplaced == 1


def test_an_unknown_window_or_a_bad_csv_is_one_clear_error(archive, tmp_path):
    with pytest.raises(MarkError, match="No indexed window has the id 999999"):
        mark_windows(archive, "siren", [999999], True)
    bad = tmp_path / "marks.csv"
    bad.write_text("window_id,positive\n1,yes\n2,maybe\n")
    with pytest.raises(MarkError, match="line 3: positive 'maybe'"):
        read_marks_csv(bad)
    bad.write_text("id,label\n1,1\n")
    with pytest.raises(MarkError, match="needs the columns window_id, positive"):
        read_marks_csv(bad)
    good = tmp_path / "good.csv"
    good.write_text("window_id,positive\n3,1\n4,false\n")
    assert read_marks_csv(good) == ([3, 4], [True, False])
    with pytest.raises(MarkError, match="There is no learned label"):
        newest_learned(archive, "never learned")


def test_suggestions_are_unmarked_one_window_per_recording_top_and_unsure(archive):
    events, others = _event_windows(archive)
    mark_windows(archive, "siren", events[:3], True)
    mark_windows(archive, "siren", others[:6], False)
    learn_label(archive, "siren", FitOptions(weak_negatives=40))
    suggestions = suggest_windows(archive, "siren", k=6)
    assert len(suggestions) == 6
    assert len({s.recording_id for s in suggestions}) == 6
    assert not {s.window_id for s in suggestions} & (set(events[:3]) | set(others[:6]))
    top = [s.window_id for s in suggestions if s.reason == "top"]
    assert set(top) <= set(events[3:]) and len(top) == 3 and {s.reason for s in suggestions} == {"top", "unsure"}


# --- learned labels in audits -------------------------------------------------------------------

LEARNED_SET = """\
name: learned siren
mode: multi-label
labels:
  - learned: siren
  - tone 440
"""


def _learned(archive, weak=40):
    events, others = _event_windows(archive)
    mark_windows(archive, "siren", events[:3], True)
    mark_windows(archive, "siren", others[:6], False)
    return learn_label(archive, "siren", FitOptions(weak_negatives=weak)).learned


def test_an_audit_with_a_learned_label_flags_exactly_the_windows_the_scorer_says(archive):
    from indexer.audit.labelset_yaml import parse_labelset
    from indexer.audit.runner import collect_windows, run_audit, score

    learned = _learned(archive)
    labelset = parse_labelset(LEARNED_SET)
    assert labelset.labels[0].learned and not labelset.labels[1].learned
    scores = score(archive, labelset)
    windows = collect_windows(archive)
    says = learned.scorer.scores(archive.window_vectors(windows.ids)) >= 0  # probability >= 0.5
    column = scores.labels.index("siren")
    for row, recording in enumerate(scores.recording_ids):
        mine = says[windows.recording == recording]
        assert scores.flagged[row, column] == mine.any()
        assert scores.flagged_windows[row, column] == mine.sum()
    assert scores.flagged[:, column].sum() == 8  # the eight recordings with the planted event
    run = run_audit(archive, labelset)
    assert run.learned_versions == {"siren": 1}


def test_a_standing_audit_uses_the_newest_version_and_records_it(tmp_path):
    from indexer.audit.labelset_yaml import parse_labelset
    from indexer.audit.runner import run_audit
    from indexer.audit.saved_runs import get_run

    drop = _drop(tmp_path / "drop")
    with Archive.open(tmp_path / "archive", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        _learned(archive, weak=10)
        run = run_audit(archive, parse_labelset(LEARNED_SET), standing=True)
        events, _ = _event_windows(archive)
        mark_windows(archive, "siren", events[3:4], True)
        assert learn_label(archive, "siren", FitOptions(weak_negatives=10)).learned.version == 2
        write_sequence(drop / "new.wav", [(EVENT_HZ, 10)])
        report = archive.index([drop])
        [update] = report.audits
        assert update.run_id == run.id and [flag[1] for flag in update.new_flags] == ["siren"]
        assert get_run(archive.catalog, run.id).learned_versions == {"siren": 2}
        # the analyst turns around: every event window is wrong. Version 3 flags none of them, and the
        # next extension scores the whole run again with it (no recording keeps version 2's flag)
        for m in marks_of(archive, "siren"):
            mark_windows(archive, "siren", [m.window_id], False)
        mark_windows(archive, "siren", _event_windows(archive)[1][:2], True)
        assert learn_label(archive, "siren", FitOptions(weak_negatives=10)).learned.version == 3
        write_sequence(drop / "newer.wav", [(200, 10)])
        archive.index([drop])
        extended = get_run(archive.catalog, run.id)
        assert extended.learned_versions == {"siren": 3}
        fresh = run_audit(archive, parse_labelset(LEARNED_SET))
        flags = "SELECT recording_id FROM audit_results WHERE run_id = ? AND label = 'siren' AND flagged ORDER BY 1"
        rows_query = __import__("indexer.audit.saved_runs", fromlist=["x"]).rows_query
        assert rows_query(archive.catalog, [run.id], flags, [run.id]) == rows_query(archive.catalog, [fresh.id], flags, [fresh.id])
        spread = __import__("indexer.audit.saved_runs", fromlist=["x"]).score_spread(archive.catalog, run.id, "siren")
        assert spread.threshold == pytest.approx(extended.learned_thresholds["siren"]) and spread.threshold != 0.3


def test_a_learned_label_never_learned_is_one_clear_error(archive):
    from indexer.audit.labelset_yaml import parse_labelset
    from indexer.audit.runner import run_audit
    from indexer.errors import LabelSetError

    with pytest.raises(MarkError, match='There is no learned label "siren"'):
        run_audit(archive, parse_labelset(LEARNED_SET))
    with pytest.raises(LabelSetError, match="takes no prompts"):
        parse_labelset("name: x\nlabels:\n  - learned: siren\n    prompts: [a]\n")


@pytest.mark.parametrize("name", ["x'); DROP TABLE label_marks; --", "飞机 ✈ \u202e reversed", "tone\x00null"])
def test_hostile_label_names_are_data(archive, name):
    events, _ = _event_windows(archive)
    mark_windows(archive, name, events[:1], True)
    [mark] = marks_of(archive, name)
    assert mark.window_id == events[0]
    assert archive.catalog.con.execute("SELECT count(*) FROM label_marks").fetchone()[0] == 1


def test_out_of_range_window_ids_and_overlong_names_are_one_clear_error(archive):
    with pytest.raises(MarkError, match="No indexed window has the id"):
        mark_windows(archive, "siren", [10**30, -5], True)
    with pytest.raises(MarkError, match="longer than"):
        mark_windows(archive, "x" * 500, [1], True)
    with pytest.raises(MarkError, match="A label name is needed"):
        mark_windows(archive, "  ...  ", [1], True)


def test_only_negative_marks_push_the_label_away_from_what_they_mark(archive):
    events, others = _event_windows(archive)
    text = text_query(archive, "tone 440")
    wrong = [w for w in others if float(archive.window_vectors([w])[0] @ text) > 0.9][:3]
    assert wrong  # the text query likes these
    mark_windows(archive, "tone 440", wrong, False)
    learned = learn_label(archive, "tone 440", FitOptions(weak_negatives=20)).learned
    assert learned.positives == 0 and not np.allclose(learned.scorer.direction, text)
    before = archive.window_vectors(wrong) @ text
    after = archive.window_vectors(wrong) @ learned.scorer.direction
    assert (after < before).all()


def test_copies_of_marked_audio_are_neither_suggested_nor_weak_negatives(tmp_path):
    from indexer.learning.marks import marked_windows

    drop = _drop(tmp_path / "drop")
    shutil.copy(drop / "call00.wav", drop / "copy-of-call00.wav")
    with Archive.open(tmp_path / "archive", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        rows = archive.catalog.con.execute(
            "SELECT w.id FROM windows w JOIN recordings r ON r.id = w.recording_id WHERE r.path LIKE '%call00.wav'"
            " ORDER BY r.path, w.id").fetchall()
        original_ids, copy_ids = [r[0] for r in rows[:6]], [r[0] for r in rows[6:]]  # call00 sorts before copy-of-
        mark_windows(archive, "siren", copy_ids, True)  # marked on the copy
        assert set(marked_windows(archive, "siren")) == set(copy_ids) | set(original_ids)
        suggested = {s.window_id for s in suggest_windows(archive, "siren", k=12)}
        assert suggested and not suggested & set(original_ids)


def test_a_marks_csv_row_with_extra_fields_is_one_clear_error(tmp_path):
    bad = tmp_path / "marks.csv"
    bad.write_text("window_id,positive\n1,1\n2,0,extra\n")
    with pytest.raises(MarkError, match="line 3 has more fields than the header"):
        read_marks_csv(bad)


def test_suggestions_pick_the_first_k_by_partition_exactly_as_a_stable_sort_would():
    """Suggestions at ten million windows partition instead of sorting; ties (many, and the marked
    windows pushed to the end as inf) must come out in the order a stable sort gives."""
    from indexer.learning.suggest import _first

    rng = np.random.default_rng(0)
    keys = rng.integers(0, 20, 5000).astype(np.float32)
    keys[::7] = np.inf
    for count in (1, 5, 64, 700, 4285, 4999, 5000, 6000):
        assert np.array_equal(_first(keys, count), np.argsort(keys, kind="stable")[:count]), count


def test_suggestion_scores_are_each_windows_own_across_many_blocks(tmp_path, monkeypatch):
    """The scan's product reuses one buffer per block: every block's scores must be kept, not the last's."""
    from indexer.learning.suggest import _scan
    from indexer.model import block_product
    from tests.test_block_scan import _archive

    monkeypatch.setattr(block_product, "DEFAULT_BLOCK_ROWS", 32)
    with _archive(tmp_path / "arch", 40, np.random.default_rng(9)) as archive:
        direction = archive.embed_text(["tone 440"])[0]
        ids, scores = _scan(archive, direction)
        assert len(ids) > 3 * 32 and np.array_equal(ids, archive.store.ids())
        np.testing.assert_allclose(scores, archive.window_vectors(ids) @ direction, atol=1e-5)
