"""Audits with the fake encoder: exact flags, winners, exclusions, percentiles, saved runs, standing audits."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from indexer import Archive
from indexer.audit import saved_runs as audit_runs
from indexer.audit.runner import run_audit
from indexer.errors import AuditError
from indexer.audit.labelset import inline_labelset
from indexer.audit.labelset_yaml import parse_labelset
from indexer.search.filtering import SearchFilters
from tests.audio_factory import RATE, tone, write_sequence
from tests.fakes import BAND_EDGES, FakeEncoder

CENTRES = np.sqrt(BAND_EDGES[:-1] * BAND_EDGES[1:])
LOW, MID, HIGH = (int(round(CENTRES[i])) for i in (6, 8, 11))
MID_IN_E = np.sqrt(0.09 / 0.34)  # e.wav: MID at 0.3 amplitude + HIGH at 0.5 -> energy shares 0.265 / 0.735
HIGH_IN_E = np.sqrt(0.25 / 0.34)


@pytest.fixture
def archive(tmp_path):
    """a: LOW|MID|HIGH (30 s); b: MID+HIGH equal; c: HIGH | MID+¼LOW; d: LOW; e: 0.3·MID + 0.5·HIGH."""
    folder = tmp_path / "recs"
    write_sequence(folder / "a.wav", [(LOW, 10), (MID, 10), (HIGH, 10)])
    sf.write(folder / "b.wav", tone(MID, 10) + tone(HIGH, 10), RATE)
    sf.write(folder / "c.wav", np.concatenate([tone(HIGH, 10), tone(MID, 10) + tone(LOW, 10, amplitude=0.25)]), RATE)
    write_sequence(folder / "d.wav", [(LOW, 10)])
    sf.write(folder / "e.wav", tone(MID, 10, amplitude=0.3) + tone(HIGH, 10, amplitude=0.5), RATE)
    (folder / "meta.csv").write_text("file,agent,date\na.wav,A1,2024-01-01\nb.wav,A2,2024-01-02\nc.wav,A1,2024-01-02\nd.wav,A2,2024-01-03\ne.wav,A1,2024-01-03\n")
    archive = Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True)
    archive.catalog.import_metadata(folder / "meta.csv")
    archive.index([folder])
    yield archive
    archive.close()


def flags(archive, run, label):
    rows = audit_runs.rows_query(
        archive.catalog, [run.id], "SELECT r.file_name FROM audit_results a JOIN recordings r ON r.id = a.recording_id"
        " WHERE a.run_id = ? AND a.label = ? AND a.flagged ORDER BY r.file_name", [run.id, label],
    )
    return [r[0] for r in rows]


def result(archive, run, name, label):
    table = audit_runs.rows_query(
        archive.catalog, [run.id], "SELECT a.* FROM audit_results a JOIN recordings r ON r.id = a.recording_id"
        " WHERE a.run_id = ? AND r.file_name = ? AND a.label = ?", [run.id, name, label], fetch="arrow",
    )
    return table.to_pylist()[0]


def test_multi_label_flags_every_label_above_its_threshold(archive):
    labels = inline_labelset([f"tone {MID}", f"tone {HIGH}"], mode="multi-label", threshold=0.85)
    run = run_audit(archive, labels)
    assert flags(archive, run, f"tone {MID}") == ["a.wav", "c.wav"]  # 1.0 and 0.894; b has 0.707, e 0.514
    assert flags(archive, run, f"tone {HIGH}") == ["a.wav", "c.wav", "e.wav"]  # e: 0.857
    best = result(archive, run, "a.wav", f"tone {MID}")
    assert (best["best_start_s"], best["best_end_s"]) == (10, 20) and best["score"] == pytest.approx(1, abs=0.01)
    assert best["flagged_windows"] == 1 and best["flagged_seconds"] == 10
    assert run.windows_scored == 3 + 1 + 2 + 1 + 1


def test_exclusive_mode_gives_each_window_one_winner(archive):
    run = run_audit(archive, inline_labelset([f"tone {MID}", f"tone {HIGH}"], mode="exclusive", threshold=0.5))
    # e: HIGH wins its only window, so MID is not flagged there even though 0.514 >= 0.5
    # (b's window is an exact tie between the two and is left out of the assertions)
    assert {"a.wav", "c.wav"} <= set(flags(archive, run, f"tone {MID}")) and "e.wav" not in flags(archive, run, f"tone {MID}")
    assert {"a.wav", "c.wav", "e.wav"} <= set(flags(archive, run, f"tone {HIGH}"))
    multi = run_audit(archive, inline_labelset([f"tone {MID}", f"tone {HIGH}"], mode="multi-label", threshold=0.5))
    assert "e.wav" in flags(archive, multi, f"tone {MID}")
    e_mid = result(archive, run, "e.wav", f"tone {MID}")
    e_high = result(archive, run, "e.wav", f"tone {HIGH}")
    expected = 1 / (1 + np.exp(10.0 * (HIGH_IN_E - MID_IN_E)))  # softmax at the fake's logit scale 10
    assert e_mid["probability"] == pytest.approx(expected, abs=1e-4)
    assert e_high["is_best"] and not e_mid["is_best"]
    assert e_high["confidence"] == pytest.approx(1 - expected, abs=1e-4)


def test_but_not_exclusion_lowers_the_score_by_the_margin(archive):
    plain = run_audit(archive, inline_labelset([f"tone {MID}"], mode="multi-label", threshold=0.45))
    excluding = run_audit(archive, inline_labelset([f"tone {MID} but not tone {HIGH}"], mode="multi-label", threshold=0.45))
    assert result(archive, plain, "e.wav", f"tone {MID}")["score"] == pytest.approx(MID_IN_E, abs=1e-3)
    adjusted = MID_IN_E - (HIGH_IN_E - MID_IN_E)
    assert result(archive, excluding, "e.wav", f"tone {MID}")["score"] == pytest.approx(adjusted, abs=1e-3)
    assert "e.wav" in flags(archive, plain, f"tone {MID}") and "e.wav" not in flags(archive, excluding, f"tone {MID}")
    # b: MID and HIGH equal, so the exclusion costs nothing (the margin is zero)
    assert result(archive, excluding, "b.wav", f"tone {MID}")["score"] == pytest.approx(np.sqrt(0.5), abs=1e-3)


def test_percentiles_and_top_percent_thresholds(archive):
    run = run_audit(archive, inline_labelset([f"tone {MID}"], mode="multi-label", threshold="top 20%"))
    assert flags(archive, run, f"tone {MID}") == ["a.wav"]  # one recording in five
    pct = {f"{n}.wav": result(archive, run, f"{n}.wav", f"tone {MID}")["percentile"] for n in "abcde"}
    assert pct["a.wav"] == 100 and pct["c.wav"] == 80 and pct["b.wav"] == 60 and pct["e.wav"] == 40


def test_filters_restrict_the_audit(archive):
    run = run_audit(archive, inline_labelset([f"tone {MID}"], mode="multi-label", threshold=0.5),
                    SearchFilters(where="agent = 'A2'"))
    rows = audit_runs.rows_query(archive.catalog, [run.id], "SELECT count(*) FROM audit_results WHERE run_id = ?", [run.id])
    assert rows[0][0] == 2 and flags(archive, run, f"tone {MID}") == ["b.wav"]


def test_saved_run_round_trip_export_and_diff(archive, tmp_path):
    yaml_text = f"name: tones\nmode: multi-label\nthreshold: 0.85\nlabels:\n  - tone {MID}\n  - tone {HIGH}\n"
    first = run_audit(archive, parse_labelset(yaml_text))
    second = run_audit(archive, inline_labelset([f"tone {MID}", f"tone {HIGH}"], name="tones", mode="multi-label", threshold=0.5))
    assert [r.id for r in audit_runs.list_runs(archive.catalog)] == [first.id, second.id]
    assert audit_runs.get_run(archive.catalog, "tones").id == second.id  # a name means its latest run
    assert first.labelset_source == yaml_text and first.model_revision == "fake-1"
    counts = {c.label: c.flagged_recordings for c in audit_runs.label_counts(archive.catalog, first.id)}
    assert counts == {f"tone {MID}": 2, f"tone {HIGH}": 3}

    out = tmp_path / "first.csv"
    assert audit_runs.export(archive.catalog, first.id, out, "csv") == 5
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert list(next(csv.reader(out.open())))[:6] == ["file", "best_label", "score", "confidence", "highlight_start_s", "highlight_end_s"]
    assert rows["a.wav"]["meta.agent"] == "A1" and rows["e.wav"]["best_label"] == f"tone {HIGH}"
    parquet = tmp_path / "first.parquet"
    audit_runs.export(archive.catalog, first.id, parquet, "parquet", all_labels=True)
    assert pq.read_table(parquet).num_rows == 10

    change = audit_runs.diff(archive.catalog, first.id, second.id)
    newly = {(path.rsplit("/", 1)[-1], label) for path, label, _ in change.newly_flagged}
    assert newly == {("b.wav", f"tone {HIGH}"), ("b.wav", f"tone {MID}"), ("e.wav", f"tone {MID}")}
    assert change.cleared == []
    assert (f"tone {MID}", 2, 4) in change.counts
    with pytest.raises(AuditError, match="no audit run"):
        audit_runs.get_run(archive.catalog, "nope")


def test_standing_audit_scores_only_new_recordings(archive, tmp_path):
    run = run_audit(archive, inline_labelset([f"tone {MID}"], name="mid", mode="multi-label", threshold=0.85), standing=True)
    before = audit_runs.get_run(archive.catalog, run.id).windows_scored
    write_sequence(tmp_path / "recs" / "f.wav", [(LOW, 10), (MID, 10)])
    report = archive.index([tmp_path / "recs"])
    update = report.audits[0]
    assert update.run_id == run.id and update.recordings_scored == 1
    assert [(p.rsplit("/", 1)[-1], label) for p, label, _, _ in update.new_flags] == [("f.wav", f"tone {MID}")]
    after = audit_runs.get_run(archive.catalog, run.id)
    assert after.windows_scored == before + 2
    assert flags(archive, after, f"tone {MID}") == ["a.wav", "c.wav", "f.wav"]
    assert result(archive, after, "f.wav", f"tone {MID}")["best_start_s"] == 10
    again = archive.index([tmp_path / "recs"])  # nothing new: nothing scored
    assert again.audits == [] and audit_runs.get_run(archive.catalog, run.id).windows_scored == before + 2


def test_scan_accepts_another_matrix_product(archive):
    """The GPU path hands score_archive its own product; the numbers must not change."""
    from indexer.audit.runner import collect_windows, label_vectors
    from indexer.audit.scoring import score_archive

    labelset = inline_labelset([f"tone {MID}", f"tone {HIGH} but not tone {LOW}"], mode="exclusive", threshold=0.5)
    windows = collect_windows(archive)
    matrix = archive.window_vectors(windows.ids)
    vectors = label_vectors(archive.embed_text, labelset)
    calls = []

    def product(m, q):
        calls.append(m.shape)
        return (q.astype(np.float64) @ m.T.astype(np.float64)).astype(np.float32)

    plain = score_archive(matrix, windows, vectors, labelset, 10.0, 10.0)
    routed = score_archive(matrix, windows, vectors, labelset, 10.0, 10.0, product=product)
    assert calls == [matrix.shape]
    np.testing.assert_allclose(routed.score, plain.score, atol=1e-6)
    assert (routed.flagged == plain.flagged).all()
