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


@dataclass(frozen=True)
class EmbeddingSetup:
    """How an encoder computes its vectors besides its weights: a resumed run gives the same bits
    only with the same device kind, precision and batch shape (the manifest records them)."""

    device_kind: str
    """"cpu" or "cuda"."""
    precision: str
    """"fp32", "tf32", "bf16" or "fp16"."""
    batch_size: int


def embedding_setup(encoder: object) -> EmbeddingSetup | None:
    """The encoder's ``setup`` when it tells one (the CLAP does; stand-ins need not)."""
    setup = getattr(encoder, "setup", None)
    return setup if isinstance(setup, EmbeddingSetup) else None


class PendingVectors(Protocol):
    """Audio vectors being computed (on a GPU, while the caller prepares the next batch)."""

    def result(self) -> np.ndarray:
        """(n, dim) float32 unit vectors, waiting for them if need be."""
        ...


class ReadyVectors:
    """Vectors already computed, as a ``PendingVectors``."""

    def __init__(self, vectors: np.ndarray) -> None:
        self._vectors = vectors

    def result(self) -> np.ndarray:
        return self._vectors


def submit_audio(encoder: Encoder, windows: Sequence[np.ndarray]) -> PendingVectors:
    """``encoder.submit(windows)`` where it has one (the CLAP: asynchronous on CUDA), else
    ``embed_audio`` now, so a caller can keep one batch in flight with any encoder."""
    submit = getattr(encoder, "submit", None)
    if callable(submit):
        return submit(windows)
    return ReadyVectors(encoder.embed_audio(windows))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
