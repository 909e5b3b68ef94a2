"""What the engine needs from an embedding model, without importing torch.

``indexer.model.encoder.ClapEncoder`` is the real implementation; tests use a deterministic fake with known
vectors. Everything downstream (pipeline, search, classify) depends only on this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

DEFAULT_PROMPTS: tuple[str, ...] = ("{label}", "the sound of {label}", "this is a sound of {label}")
"""Prompt ensemble for text queries: each label is embedded in every template, averaged, normalised."""


@dataclass(frozen=True)
class ModelIdentity:
    """Recorded in the archive manifest; two archives' vectors are comparable only if these match."""

    model_id: str
    revision: str
    dim: int


class Encoder(Protocol):
    identity: ModelIdentity
    sample_rate: int
    logit_scale: float
    """CLAP's learned temperature for audio–text logits (exp of the stored log value)."""

    def embed_audio(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dim) float32, L2-normalised; each row depends only on its own window."""
        ...

    def embed_text(self, labels: Sequence[str], prompts: Sequence[str] = DEFAULT_PROMPTS) -> np.ndarray:
        """(n, dim) float32, L2-normalised prompt-ensemble vector per label."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class PendingVectors:
    """TEMP eager stand-in until the model branch lands."""

    def __init__(self, vectors: np.ndarray):
        self._vectors = vectors

    def result(self) -> np.ndarray:
        return self._vectors


def submit_audio(encoder, windows) -> PendingVectors:
    submit = getattr(encoder, "submit", None)
    return submit(windows) if submit is not None else PendingVectors(encoder.embed_audio(windows))
