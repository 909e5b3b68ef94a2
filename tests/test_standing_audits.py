"""Standing audits equal a fresh run of their label set, bit for bit, after any sequence of changes.

Random sequences (seeded) of indexing new files, deleting one and pruning, rewriting one, marking
and learning a learned label, and importing changed metadata; after each, every standing run's
rows and counts must equal those of ``run_audit`` of the same set and filters. The sets cover
"top x%" and cosine thresholds, min_score, min_confidence, exclusive and multi-label modes, a
"but not" exclusion, a ``learned:`` label and a ``where`` filter. Recordings are short mixes of
two tones at random amplitudes (the fake encoder's vectors are their band energies), with
overlapping 1 s windows; some files are copies of others, so ties at the cutoffs happen.
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from indexer import Archive, IndexOptions
from indexer.archive.records import RecordingRow, WindowRows
from indexer.audit import saved_runs as audit_runs
from indexer.audit.labelset import inline_labelset
from indexer.audit.labelset_yaml import parse_labelset
from indexer.audit.runner import extend_standing_audits, run_audit
from indexer.config import WindowConfig
from indexer.embedding import DEFAULT_PROMPTS, ModelIdentity, l2_normalise
from indexer.learning.fit import FitOptions
from indexer.learning.learned import learn_label
from indexer.learning.marks import mark_windows
from indexer.search.filtering import SearchFilters
from tests.audio_factory import RATE, tone
from tests.fakes import BAND_EDGES, FakeEncoder

CENTRES = np.sqrt(BAND_EDGES[:-1] * BAND_EDGES[1:])
A, B, C, D = (int(round(CENTRES[i])) for i in (5, 7, 9, 11))
PALETTE = [int(round(f)) for f in CENTRES[3:13]]

SETS = {
    "exclusive": (f"""
name: exclusive
mode: exclusive
threshold: top 30%
min_confidence: 0.6
labels:
  - tone {A}
  - tone {B} but not tone {C}
  - name: tone {D}
    threshold: 0.5
""", None),
    "multi": (f"""
name: multi
mode: multi-label
threshold: top 25%
min_score: 0.3
labels:
  - tone {A}
  - tone {C}
  - name: tone {B}
    threshold: top 10%
""", None),
    "learned": (f"""
name: learned
mode: multi-label
threshold: top 40%
min_confidence: 0.55
labels:
  - learned: siren
  - tone {D}
  - name: tone {A}
    threshold: 0.6
""", None),
    "north": (f"""
name: north
mode: exclusive
threshold: top 50%
min_score: 0.2
labels:
  - tone {A}
  - tone {C}
  - tone {D} but not tone {B}
""", "site = 'north'"),
}

COLUMNS = ("recording_id, label, score, probability, confidence, percentile, best_window_id, best_start_s, best_end_s,"
           " channel, flagged_windows, flagged_seconds, flagged, is_best")


def _write(path, rng: random.Random) -> None:
    """1-4 s of one-second mixes of two tones; a silent second now and then."""
    parts = []
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.1:
            parts.append(np.zeros(RATE, np.float32))
            continue
        low, high = rng.sample(PALETTE, 2)
        parts.append(tone(low, 1.0, amplitude=rng.uniform(0.05, 0.6)) + tone(high, 1.0, amplitude=rng.uniform(0.05, 0.6)))
    sf.write(path, np.concatenate(parts), RATE)


def _metadata(path, files, rng: random.Random) -> None:
    lines = ["file,site"] + [f"{f.name},{rng.choice(['north', 'south'])}" for f in files]
    path.write_text("\n".join(lines) + "\n")


def _rows(archive, run_id):
    return audit_runs.rows_query(
        archive.catalog, [run_id], f"SELECT {COLUMNS} FROM audit_results WHERE run_id = ? ORDER BY recording_id, label", [run_id])


def assert_standing_equals_fresh(archive, where=""):
    for run in audit_runs.standing_runs(archive.catalog):
        labelset = audit_runs.labelset_of(archive.catalog, run)
        fresh = run_audit(archive, labelset, SearchFilters.from_json(json.loads(run.filters)))
        standing = audit_runs.get_run(archive.catalog, run.id)
        mine, theirs = _rows(archive, run.id), _rows(archive, fresh.id)
        assert len(mine) == len(theirs), f"{where}: {run.name}: {len(mine)} rows, a fresh run has {len(theirs)}"
        for a, b in zip(mine, theirs):
            assert a == b, f"{where}: {run.name}:\n standing {a}\n fresh    {b}"
        assert (standing.windows_scored, standing.archive_windows, standing.learned_versions, standing.learned_thresholds,
                standing.product) == (fresh.windows_scored, fresh.archive_windows, fresh.learned_versions,
                                      fresh.learned_thresholds, fresh.product), f"{where}: {run.name}"
        archive.catalog.con.execute("DELETE FROM audit_run_files WHERE run_id = ?", [fresh.id])
        archive.catalog.con.execute("DELETE FROM audit_runs WHERE id = ?", [fresh.id])


def _learn(archive, rng: random.Random) -> None:
    ids = archive.catalog.all_window_ids()
    picked = rng.sample(list(ids), min(len(ids), 4))
    mark_windows(archive, "siren", [int(i) for i in picked], [rng.random() < 0.6 for _ in picked])
    learn_label(archive, "siren", FitOptions(weak_negatives=8))


@pytest.mark.parametrize("seed", range(5))
def test_a_standing_audit_equals_a_fresh_run_after_any_sequence(tmp_path, seed):
    rng = random.Random(seed)
    folder, meta = tmp_path / "recs", tmp_path / "meta.csv"
    folder.mkdir()
    files = []
    for i in range(6):
        files.append(folder / f"r{i:03d}.wav")
        _write(files[-1], rng)
    _metadata(meta, files, rng)
    windows = WindowConfig(length_s=1.0, hop_s=0.5, min_tail_s=0.5)
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True, windows=windows) as archive:
        archive.index([folder], IndexOptions(metadata=(meta,)))
        _learn(archive, rng)
        for text, where in SETS.values():
            run_audit(archive, parse_labelset(text), SearchFilters(where=where), standing=True)
        made = len(files)
        for step in range(10):
            op = rng.choice(["add", "add", "prune", "rewrite", "copy", "learn", "metadata"])
            if op == "add" or (op in ("prune", "rewrite", "copy") and len(files) < 3):
                for _ in range(rng.randint(1, 3)):
                    files.append(folder / f"r{made:03d}.wav")
                    made += 1
                    _write(files[-1], rng)
                archive.index([folder])
            elif op == "prune":
                gone = files.pop(rng.randrange(len(files)))
                gone.unlink()
                report = archive.index([folder], IndexOptions(prune=True))
                assert report.pruned == 1
            elif op == "rewrite":
                changed = rng.choice(files)
                _write(changed, rng)
                os.utime(changed, (1e9 + step, 1e9 + step))
                archive.index([folder])
            elif op == "copy":  # the same audio again: ties for every label at every cutoff
                files.append(folder / f"r{made:03d}.wav")
                made += 1
                files[-1].write_bytes(rng.choice(files[:-1]).read_bytes())
                archive.index([folder])
            elif op == "learn":
                _learn(archive, rng)
                archive.index([folder])  # nothing new: the standing audits take the new version
            else:
                _metadata(meta, files, rng)
                archive.index([folder], IndexOptions(metadata=(meta,)))
            assert_standing_equals_fresh(archive, f"seed {seed} step {step} ({op})")


def test_pruning_leaves_unchanged_recordings_unflagged_when_a_fresh_run_flags_nothing(tmp_path):
    """The issue's scenario: "top x%" with min_score and min_confidence, where no window is
    confident enough to flag; removing one file and pruning must not flag the rest."""
    folder = tmp_path / "recs"
    folder.mkdir()
    rng = random.Random(7)
    for i in range(12):  # both tones in every second, nearly equal: confidence ≈ 0.5 < 0.6
        mix = [tone(A, 1.0, amplitude=0.4 + rng.uniform(0, 0.01)) + tone(C, 1.0, amplitude=0.4) for _ in range(rng.randint(1, 3))]
        sf.write(folder / f"c{i:02d}.wav", np.concatenate(mix), RATE)
    labelset = parse_labelset(f"""
name: call-centre QA
mode: multi-label
threshold: top 20%
min_score: 0.2
min_confidence: 0.6
labels: [tone {A}, tone {C}]
""")
    windows = WindowConfig(length_s=1.0, hop_s=1.0, min_tail_s=0.5)
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True, windows=windows) as archive:
        archive.index([folder])
        run = run_audit(archive, labelset, standing=True)
        assert audit_runs.recordings_flagged(archive.catalog, run.id)[1] == 0
        (folder / "c05.wav").unlink()
        report = archive.index([folder], IndexOptions(prune=True))
        [update] = report.audits
        assert (update.recordings_scored, update.new_flags) == (0, [])
        assert audit_runs.recordings_flagged(archive.catalog, run.id) == (11, 0)
        assert audit_runs.get_run(archive.catalog, run.id).windows_scored == archive.catalog.window_count()
        assert_standing_equals_fresh(archive, "after prune")


def test_extending_scores_only_what_changed(tmp_path):
    """A new recording is scored alone (plus earlier ones whose flags a moved cutoff can change),
    an index run that changes nothing touches no run, and a run from before this arithmetic
    (flags set from percentiles, with no flagged window) is scored again in full, once."""
    rng = random.Random(3)
    folder = tmp_path / "recs"
    folder.mkdir()
    for i in range(10):
        _write(folder / f"r{i:02d}.wav", rng)
    labelset = parse_labelset(SETS["multi"][0])
    windows = WindowConfig(length_s=1.0, hop_s=1.0, min_tail_s=0.5)
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True, windows=windows) as archive:
        archive.index([folder])
        run = run_audit(archive, labelset, standing=True)
        _write(folder / "new.wav", rng)
        [update] = archive.index([folder]).audits
        assert update.recordings_scored == 1
        assert archive.index([folder]).audits == []
        rows = audit_runs.rows_query(archive.catalog, [run.id], "SELECT * FROM audit_results WHERE run_id = ?", [run.id], fetch="arrow")
        rows = rows.set_column(rows.schema.get_field_index("flagged"), "flagged",  # what the old merge left: a flag
                               pa.array([f or r == 1 for f, r in zip(rows["flagged"].to_pylist(), rows["recording_id"].to_pylist())]))
        written = archive.catalog.run_files.write(run.id, rows)                 # with no flagged window
        with archive.catalog.transaction():
            archive.catalog.name_run_files(run.id, written)
        _write(folder / "newer.wav", rng)
        [update] = archive.index([folder]).audits
        assert update.recordings_scored == 12  # the inconsistent run was scored again in full
        assert_standing_equals_fresh(archive, "healed")


WIDE = 512


class WideEncoder(FakeEncoder):
    """CLAP's width, where BLAS rounds a small product otherwise than a large one; each label's
    text is a fixed random direction."""

    def __init__(self):
        super().__init__("wide-1")
        self.identity = ModelIdentity("fake-wide", "wide-1", WIDE)

    def embed_text(self, labels, prompts=DEFAULT_PROMPTS):
        seeds = [int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "little") for label in labels]
        return np.stack([l2_normalise(np.random.default_rng(s).standard_normal(WIDE)) for s in seeds]).astype(np.float32)


def add_wide(archive, rng, count: int, lengths: list[int], vectors) -> np.ndarray:
    """``count`` recordings of vectors stored directly (no audio), each of a length drawn from
    ``lengths`` windows; ``vectors(n)`` gives a recording's (n, WIDE) directions. Their ids."""
    rows, windows = [], []
    for _ in range(count):
        n = int(rng.choice(lengths))
        mix = vectors(n)
        rows.append(RecordingRow(path=f"/calls/{rng.integers(1 << 40)}.wav", content_hash=None, size_bytes=0, mtime=0.0,
                                 status="indexed", duration_s=10.0 * n))
        zeros = np.zeros(n)
        windows.append(WindowRows(np.zeros(n, np.int16), np.arange(n) * 10.0, np.arange(1, n + 1) * 10.0, zeros, zeros,
                                  zeros, zeros, (mix / np.linalg.norm(mix, axis=1, keepdims=True)).astype(np.float32)))
    return archive.add_recordings(rows, windows)


def test_a_standing_audit_at_clap_width_equals_a_fresh_run(tmp_path, monkeypatch):
    """512 dimensions and ten labels: recordings added one or two at a time (some of one window)
    and removed (at last a whole block of them) must score as in a full run, whatever BLAS kernel
    a product of that size takes. Small blocks, so there are many."""
    from indexer.audit import runner

    monkeypatch.setattr(runner, "BLOCK_ROWS", 64)
    rng = np.random.default_rng(11)
    names = [f"sound {i}" for i in range(10)]
    directions = WideEncoder().embed_text(names)

    def add(count: int) -> np.ndarray:
        return add_wide(archive, rng, count, [1, 1, 2, 5, 9], lambda n: rng.dirichlet(np.full(len(names), 0.3), size=n)
                        @ directions + 0.4 * rng.standard_normal((n, WIDE)) / np.sqrt(WIDE))

    with Archive.open(tmp_path / "arch", encoder=WideEncoder(), create=True) as archive:
        add(40)
        run_audit(archive, inline_labelset(names, mode="multi-label", threshold="top 30%", min_confidence=0.3), standing=True)
        run_audit(archive, inline_labelset(names[:9] + [f"{names[9]} but not {names[0]}"], mode="exclusive",
                                           threshold="top 50%", min_score=0.05), standing=True)
        for step in range(12):
            if step % 4 == 3:
                gone = archive.catalog.con.execute("SELECT id FROM recordings ORDER BY random() LIMIT 1").fetchall()
                archive.delete_recordings([gone[0][0]])
                extend_standing_audits(archive, np.empty(0, np.int64))
            else:
                extend_standing_audits(archive, add(int(rng.integers(1, 3))))
            assert_standing_equals_fresh(archive, f"step {step}")
        block = archive.catalog.con.execute("SELECT DISTINCT recording_id FROM windows WHERE id BETWEEN 60 AND 140").fetchall()
        archive.delete_recordings([r[0] for r in block])  # windows 64-127, a whole block, all dead
        extend_standing_audits(archive, np.empty(0, np.int64))
        assert_standing_equals_fresh(archive, "a whole block deleted")


def test_a_recording_scored_alone_gets_the_bits_of_a_full_run():
    """Pure arithmetic: each recording scored on its own, with the others' best scores as peers,
    equals its row of a run over all of them (a lone window's probabilities included: numpy's
    ``sum(axis=0)`` of one column adds ten labels in another order than of many)."""
    from indexer.audit.scoring import LabelVectors, WindowTable, score_similarity

    rng = np.random.default_rng(5)
    labels, exclusions = 10, 2
    lengths = rng.choice([1, 1, 1, 2, 3, 7], size=40)
    recording = np.repeat(np.arange(1, 41), lengths)
    n = len(recording)
    similarity = (rng.standard_normal((labels + exclusions, n)) * 0.3).astype(np.float32)
    windows = WindowTable(np.arange(n, dtype=np.int64), recording, np.arange(n) * 5.0, np.arange(n) * 5.0 + 10, np.zeros(n, np.int16))
    vectors = LabelVectors(np.zeros((labels, 4), np.float32), np.zeros((exclusions, 4), np.float32),
                           ((0,), (1,)) + ((),) * (labels - 2))
    for labelset in (inline_labelset([f"l{i}" for i in range(labels)], mode="exclusive", threshold="top 20%", min_confidence=0.3),
                     inline_labelset([f"l{i}" for i in range(labels)], mode="multi-label", threshold="top 10%", min_score=0.1)):
        full = score_similarity(similarity, windows, vectors, labelset, 10.0, 5.0)
        for row, rec in enumerate(full.recording_ids):
            mine = recording == rec
            alone = score_similarity(similarity[:, mine], _windows_of(windows, mine), vectors, labelset, 10.0, 5.0,
                                     peers_best=np.delete(full.score, row, axis=0).T)
            assert np.array_equal(alone.cutoffs, full.cutoffs)
            for field in ("score", "probability", "confidence", "best_window", "flagged_windows", "flagged_seconds", "is_best"):
                assert np.array_equal(getattr(alone, field)[0], getattr(full, field)[row]), (rec, field)


def _windows_of(windows, keep):
    from indexer.audit.scoring import WindowTable

    return WindowTable(*(getattr(windows, f)[keep] for f in WindowTable.__dataclass_fields__))


def test_an_extension_counts_the_flags_it_cleared(tmp_path):
    folder = tmp_path / "recs"
    folder.mkdir()
    sf.write(folder / "a.wav", tone(A, 2.0), RATE)
    sf.write(folder / "c.wav", tone(C, 2.0), RATE)
    labelset = parse_labelset(f"name: tones\nmode: multi-label\nthreshold: 0.9\nlabels: [tone {A}]\n")
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([folder])
        run = run_audit(archive, labelset, standing=True)
        assert audit_runs.recordings_flagged(archive.catalog, run.id) == (2, 1)
        (folder / "a.wav").unlink()
        [update] = archive.index([folder], IndexOptions(prune=True)).audits
        assert (update.recordings_scored, update.new_flags, update.cleared) == (0, [], 1)
        assert_standing_equals_fresh(archive, "after the flagged file left")


def test_a_run_extended_on_another_product_is_scored_again_there(tmp_path, monkeypatch):
    """`index --device cuda` extending a run made on the CPU, then a CPU `index` again: the GPU
    rounds the last bits its own way, so each extension scores the whole run on the product at
    hand (and records it), never mixing rows of the two."""
    from indexer.config import EncoderConfig
    from indexer.model.block_product import BlockProduct
    from indexer.session import Session

    class OtherSummation(BlockProduct):  # stands in for cuBLAS: the same maths, summed in another order
        def __call__(self, block, slots, picked=None):
            rows = block.rows() if picked is None else block.rows()[picked]
            return np.einsum("qd,md->qm", self.queries.numpy(), rows.astype(np.float32), optimize=False).astype(np.float32)

    def product(archive, queries, block_rows=None):
        return (OtherSummation if archive.scan_kind == "cuda" else BlockProduct)(queries, block_rows)

    monkeypatch.setattr(Session, "block_product", product)
    rng = np.random.default_rng(1)
    names = [f"sound {i}" for i in range(10)]

    def add(archive, count):
        return add_wide(archive, rng, count, [1, 2, 5], lambda n: rng.standard_normal((n, WIDE)))

    with Archive.open(tmp_path / "arch", encoder=WideEncoder(), create=True) as archive:
        add(archive, 40)
        run = run_audit(archive, inline_labelset(names, mode="multi-label", threshold="top 30%"), standing=True)
        assert run.product == "cpu"
    on_gpu = EncoderConfig(device="cuda")
    with Archive.open(tmp_path / "arch", encoder=WideEncoder(), encoder_config=on_gpu) as archive:
        [update] = extend_standing_audits(archive, add(archive, 5))
        assert update.recordings_scored == 45 and audit_runs.get_run(archive.catalog, run.id).product == "cuda"
        assert_standing_equals_fresh(archive, "extended on the GPU")
    with Archive.open(tmp_path / "arch", encoder=WideEncoder()) as archive:
        [update] = extend_standing_audits(archive, add(archive, 1))
        assert update.recordings_scored == 46 and audit_runs.get_run(archive.catalog, run.id).product == "cpu"
        assert_standing_equals_fresh(archive, "back on the CPU")
