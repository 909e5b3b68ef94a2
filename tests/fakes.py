"""A deterministic stand-in for CLAP whose vectors are known, for exact search and audit tests.

Audio: the window's spectrum is split into log-spaced bands; the vector is the square root of
each band's share of the energy (unit length by construction). Text: a label naming a frequency
("tone 440", "1000 Hz") is the one-hot vector of that frequency's band, so a pure tone matches
its label with cosine 1; any other label gets a fixed pseudo-random vector.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.embedding import DEFAULT_PROMPTS, ModelIdentity, l2_normalise

BAND_EDGES = np.geomspace(50, 20_000, 17)
DIM = len(BAND_EDGES) - 1


def band_of(frequency: float) -> int:
    return int(np.clip(np.searchsorted(BAND_EDGES, frequency) - 1, 0, DIM - 1))


class FakeEncoder:
    sample_rate = 48_000
    logit_scale = 10.0
    batch_size = 4

    def __init__(self, revision: str = "fake-1"):
        self.identity = ModelIdentity("fake-bands", revision, DIM)
        self.audio_calls = 0
        self.windows_embedded = 0
        self.text_calls = 0

    def embed_audio(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        self.audio_calls += 1
        self.windows_embedded += len(windows)
        return np.stack([self._audio_vector(w) for w in windows]) if len(windows) else np.empty((0, DIM), np.float32)

    def _audio_vector(self, samples: np.ndarray) -> np.ndarray:
        spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
        freqs = np.fft.rfftfreq(len(samples), 1 / self.sample_rate)
        energy = np.array([spectrum[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:])])
        if energy.sum() <= 0:
            return np.full(DIM, 1 / np.sqrt(DIM), np.float32)
        return np.sqrt(energy / energy.sum()).astype(np.float32)

    def embed_text(self, labels: Sequence[str], prompts: Sequence[str] = DEFAULT_PROMPTS) -> np.ndarray:
        self.text_calls += 1
        rows = []
        for label in labels:
            per_prompt = [self._text_vector(p.format(label=label)) for p in prompts]
            rows.append(l2_normalise(np.mean(l2_normalise(np.stack(per_prompt)), axis=0)))
        return np.stack(rows).astype(np.float32)

    def _text_vector(self, text: str) -> np.ndarray:
        match = re.search(r"(\d+(?:\.\d+)?)\s*(?:hz)?", text.lower())
        if match:
            vector = np.zeros(DIM, np.float32)
            vector[band_of(float(match.group(1)))] = 1.0
            return vector
        seed = int.from_bytes(hashlib.sha256(text.split(" of ")[-1].encode()).digest()[:4], "little")
        return l2_normalise(np.random.default_rng(seed).normal(size=DIM))


def as_schema_11(con) -> None:
    """A catalog as schema 11 left it (``con``: a DuckDB connection to it): no chunk CRCs, no ANN
    entry, no run-result files (results in a table) and no compaction leftovers."""
    from indexer.archive import schema

    con.execute("DROP TABLE vector_chunks")
    con.execute("DROP TABLE ann_index")
    con.execute("DROP TABLE audit_run_files")
    con.execute("DROP TABLE compaction_leftovers")
    unkeyed = (Path(schema.__file__).parent / "migrations" / "004_audit_results_unkeyed.sql").read_text()
    con.execute(unkeyed.split("INSERT INTO")[0].replace("audit_results_unkeyed", "audit_results"))
    con.execute("DELETE FROM schema_migrations WHERE version >= 12")
