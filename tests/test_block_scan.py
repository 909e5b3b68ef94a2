"""The audit's scan of the stored rows: one fixed-shape product per block, on the CPU or a GPU,
and the rows a GPU keeps resident kept in step with the archive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from indexer import Archive
from indexer.archive.records import RecordingRow, WindowRows
from indexer.audit import runner
from indexer.audit.labelset import inline_labelset
from indexer.model.block_product import BlockProduct
from indexer.model.resident_vectors import ResidentVectors
from tests.fakes import DIM, FakeEncoder

BLOCK = 64


class _Rows:
    """A stored block as ``BlockProduct`` reads one (``StoredBlock``'s shape)."""

    def __init__(self, rows: np.ndarray, key=("seg", 0)):
        self.key, self.ids, self._rows = key, np.arange(len(rows)), rows

    def rows(self) -> np.ndarray:
        return self._rows


def _unit(rng, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)


def test_a_row_scores_the_same_bits_in_its_slot_whatever_else_the_block_holds():
    rng = np.random.default_rng(0)
    rows = _unit(rng, BLOCK, 512)
    queries = rng.standard_normal((11, 512)).astype(np.float32)
    product = BlockProduct(queries, BLOCK)
    full = product(_Rows(rows), np.arange(BLOCK))
    reference = queries.astype(np.float64) @ rows.astype(np.float64).T
    assert full.shape == (11, BLOCK) and np.abs(full - reference).max() < 1e-5
    picked = np.array([3, 17, 40])
    alone = BlockProduct(queries, BLOCK)(_Rows(rows), picked, picked)  # a few rows, each in its own slot
    assert np.array_equal(alone, full[:, picked])
    gappy = np.array([0, 1, 5, 9, 63])  # rows around dead ones: slots with gaps, every live row picked
    assert np.array_equal(product(_Rows(rows[gappy]), gappy), full[:, gappy])


def _archive(path, recordings: int, rng) -> Archive:
    archive = Archive.open(path, encoder=FakeEncoder(), create=True)
    _add(archive, recordings, rng)
    return archive


def _add(archive: Archive, recordings: int, rng, first: int = 0) -> np.ndarray:
    rows, wins = [], []
    for r in range(first, first + recordings):
        n = int(rng.integers(1, 9))
        zeros = np.zeros(n)
        rows.append(RecordingRow(path=f"/calls/{r:05d}.wav", content_hash=None, size_bytes=0, mtime=0.0,
                                 status="indexed", duration_s=10.0 * n))
        wins.append(WindowRows(np.zeros(n, np.int16), np.arange(n) * 10.0, np.arange(1, n + 1) * 10.0, zeros, zeros,
                               zeros, zeros, _unit(rng, n).astype(np.float32)))
    return archive.add_recordings(rows, wins)


def _scan(archive: Archive, resident: ResidentVectors | None) -> np.ndarray:
    queries = np.asarray(archive.embed_text(["tone 440", "tone 1200", "tone 3700"]), np.float32)
    windows = runner.collect_windows(archive)
    archive.block_product = lambda q, rows=None: BlockProduct(q, rows, "cpu", resident)
    try:
        return runner.similarities(archive, queries, windows)
    finally:
        del archive.block_product


def test_resident_rows_are_uploaded_once_and_kept_in_step_with_added_and_deleted_windows(tmp_path, monkeypatch):
    """The residency logic is the same on any torch device, so it is tested on the CPU's memory:
    a second scan uploads nothing, windows added or deleted since are scored as a scan from the
    files scores them (bit for bit), and a budget smaller than the archive streams the rest."""
    monkeypatch.setattr(runner, "BLOCK_ROWS", BLOCK)
    rng = np.random.default_rng(3)
    with _archive(tmp_path / "arch", 60, rng) as archive:
        resident = ResidentVectors(torch.device("cpu"), budget_bytes=1 << 30)
        first = _scan(archive, resident)
        assert np.array_equal(first, _scan(archive, None))
        uploaded = resident.stats.uploaded_bytes
        assert uploaded == len(archive.store) * DIM * 2 and resident.stats.resident_bytes == uploaded
        assert np.array_equal(_scan(archive, resident), first)
        assert resident.stats.uploaded_bytes == uploaded and resident.stats.hits == len(resident)

        _add(archive, 25, rng, first=60)  # new rows: the last block grows and new ones start
        gone = archive.catalog.con.execute("SELECT id FROM recordings ORDER BY id LIMIT 3 OFFSET 10").fetchall()
        archive.delete_recordings([g[0] for g in gone])
        again = _scan(archive, resident)
        assert np.array_equal(again, _scan(archive, None))
        assert again.shape[1] == len(archive.store) and resident.stats.resident_bytes == len(archive.store) * DIM * 2
        assert resident.stats.uploaded_bytes < uploaded + len(archive.store) * DIM * 2  # unchanged blocks stayed

        small = ResidentVectors(torch.device("cpu"), budget_bytes=3 * BLOCK * DIM * 2)
        assert np.array_equal(_scan(archive, small), again)
        assert small.stats.resident_bytes <= small.budget_bytes and small.stats.streamed_bytes > 0


def test_an_audit_on_a_session_opened_for_cpu_never_makes_resident_rows(tmp_path):
    rng = np.random.default_rng(4)
    with _archive(tmp_path / "arch", 20, rng) as archive:
        run = runner.run_audit(archive, inline_labelset(["tone 440", "tone 1200"], mode="multi-label", threshold=0.1))
        assert run.product == "cpu" and archive._resident is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_resident_audit_equals_the_cpu_audit_and_follows_the_archive(tmp_path):
    from indexer.config import EncoderConfig

    rng = np.random.default_rng(5)
    labelset = inline_labelset(["tone 440", "tone 1200", "tone 3700"], mode="multi-label", threshold=0.05)
    _archive(tmp_path / "arch", 400, rng).close()
    for step in range(2):
        with Archive.open(tmp_path / "arch", encoder=FakeEncoder()) as archive:
            cpu = runner.score(archive, labelset)
        with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), encoder_config=EncoderConfig(device="cuda")) as archive:
            gpu = runner.score(archive, labelset)
            assert runner.score(archive, labelset).score.tobytes() == gpu.score.tobytes()  # the resident rows again
            assert archive.resident_vectors().stats.hits > 0 and gpu.product == "cuda"
            np.testing.assert_allclose(gpu.score, cpu.score, atol=1e-5)
            assert np.array_equal(gpu.recording_ids, cpu.recording_ids)
            _add(archive, 30, rng, first=400 + 30 * step)
            archive.delete_recordings([int(archive.catalog.one("SELECT min(id) FROM recordings")[0])])
            after = runner.score(archive, labelset)
            with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), read_only=True) as fresh:
                np.testing.assert_allclose(after.score, runner.score(fresh, labelset).score, atol=1e-5)


def test_a_long_lived_searcher_closes_the_vector_maps_past_its_budget(tmp_path):
    """The app or a service searching for hours must not end up holding the whole archive's pages
    mapped: past ``mapped_budget_bytes`` the maps are closed after a search (answers unchanged)."""
    from indexer.archive.vector_store import StoreConfig, mapped_bytes

    rng = np.random.default_rng(6)
    with _archive(tmp_path / "arch", 20, rng) as archive:
        for first in range(20, 4020, 500):
            _add(archive, 500, rng, first=first)
    rows_bytes = None
    grown = {}
    for budget in (1 << 40, 0):
        with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), read_only=True,
                          store_config=StoreConfig(mapped_budget_bytes=budget)) as archive:
            rows_bytes = len(archive.store) * DIM * 2
            before = mapped_bytes()
            hits = [archive.search(text, k=5, exact=True) for text in ("tone 440", "tone 1200")]
            grown[budget] = (mapped_bytes() - before, [[(h.path, h.score) for h in found] for found in hits])
            assert (archive.store._codes is None) == (budget == 0)
    assert grown[0][1] == grown[1 << 40][1]  # the same answers either way
    assert grown[1 << 40][0] > 0.8 * rows_bytes and grown[0][0] < 0.2 * rows_bytes
