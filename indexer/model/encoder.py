"""The CLAP encoder: deterministic audio and text embedding with a loaded model.

Two things the stock transformers path gets wrong for an archive are fixed here:
the feature extractor's random crop / random ``is_longer`` flag (windows are cut by the caller,
at most ``max_window_s``, and ``is_longer`` is pinned False, so a vector never depends on its
batch), and its slow numpy front end (replaced by ``melspec.LogMel`` on the model's device).
On CUDA the batch travels through pinned memory without blocking (``transfer``), so ``submit``
returns while the GPU works, and the model call runs at the configured precision (``precision``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from indexer.config import DEFAULT_BATCH, SAMPLE_RATE
from indexer.embedding import DEFAULT_PROMPTS, EmbeddingSetup, ModelIdentity, PendingVectors, ReadyVectors, l2_normalise
from indexer.errors import ModelError
from indexer.model.melspec import LogMel, pad_window
from indexer.model.precision import model_precision, running_at
from indexer.model.transfer import PinnedStaging

TEXT_BATCH = 64
"""Prompts embedded per text-tower call; bounds memory for long label sets."""


class ClapEncoder:
    """A loaded CLAP satisfying ``indexer.embedding.Encoder``; every row depends only on its input."""

    def __init__(
        self,
        model: Any,
        feature_extractor: Any,
        tokenizer: Any | None,
        identity: ModelIdentity,
        device: torch.device | str,
        batch_size: int | None = None,
        precision: str = "auto",
    ) -> None:
        self.device = torch.device(device)
        if batch_size is None:
            batch_size = DEFAULT_BATCH.get(self.device.type, DEFAULT_BATCH["cpu"])
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.precision = model_precision(precision, self.device)
        self.model = model.to(self.device).float().eval()
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.identity = identity
        self.batch_size = int(batch_size)
        self.mel = LogMel(feature_extractor, self.device)
        self.sample_rate = self.mel.sample_rate
        if self.sample_rate != SAMPLE_RATE:
            raise ModelError(
                f"Model '{identity.model_id}' expects {self.sample_rate} Hz audio but soundtrace decodes to "
                f"{SAMPLE_RATE} Hz; use a CLAP trained on {SAMPLE_RATE} Hz audio."
            )
        self.max_window_s = self.mel.max_window_s
        self.logit_scale = float(self.model.logit_scale_a.detach().exp().item())
        self._fused = bool(getattr(self.model.config.audio_config, "enable_fusion", False))
        self._staging: PinnedStaging | None = None
        self._asynchronous = self.device.type == "cuda"
        """Batches through pinned slots, returning before the GPU is done (tests force it on a CPU)."""

    @property
    def setup(self) -> EmbeddingSetup:
        """What besides the weights decides this encoder's bits (recorded in the archive's manifest)."""
        return EmbeddingSetup(self.device.type, self.precision, self.batch_size)

    def audio_inputs(self, windows: Sequence[np.ndarray], rows: int | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for ``get_audio_features``: mels (B, 4|1, T, F) and ``is_longer`` pinned False.

        ``rows`` pads the batch to that many windows with copies of the first one *before* the
        mel, so the mel too always runs on one shape (on CUDA its bits depend on it).
        """
        return self._inputs_from_mel(self.mel.features(_padded_list(list(windows), rows)))

    def _inputs_from_mel(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """A fused model takes the padded mel four times (global view + three "crops", exactly what
        the extractor builds for audio no longer than its maximum); an unfused one takes it once."""
        mel = mel.unsqueeze(1)  # (B, 1, T, F)
        if self._fused:
            mel = mel.expand(-1, 4, -1, -1)
        is_longer = torch.zeros((mel.shape[0], 1), dtype=torch.bool, device=self.device)
        return {"input_features": mel, "is_longer": is_longer}

    def embed_audio(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dim) float32 unit vectors; each window at most ``max_window_s`` (ValueError otherwise).

        The model always runs on batches of exactly ``batch_size`` windows, a short last batch
        padded with copies of its first window before the mel: BLAS and attention kernels are
        chosen by matrix shape, so a window's vector then has the same bits alone, in a full batch
        or in a resumed run's short one (with peers of another shape they differ by ~1e-7). On
        CUDA the next batch is prepared while the GPU runs the current one (``submit``)."""
        return self.submit(windows).result()

    def submit(self, windows: Sequence[np.ndarray]) -> PendingVectors:
        """Start embedding ``windows``; ``.result()`` gives what ``embed_audio`` gives. On CUDA it
        returns once the batches are queued (copies from pinned memory, model, copy back), so the
        caller can decode or prepare the next batch meanwhile; on a CPU it computes now."""
        windows = list(windows)
        for w in windows:
            _check_window(w, self.mel.max_samples)
        chunks = [windows[start : start + self.batch_size] for start in range(0, len(windows), self.batch_size)]
        if not self._asynchronous:
            out = np.empty((len(windows), self.identity.dim), dtype=np.float32)
            with torch.inference_mode():
                for start, chunk in zip(range(0, len(windows), self.batch_size), chunks):
                    vectors = self._unit(self._features(self.mel.features(_padded_list(chunk, self.batch_size))))
                    out[start : start + len(chunk)] = vectors.cpu().numpy()[: len(chunk)]
            return ReadyVectors(out)
        return _Joined([self._launch(chunk) for chunk in chunks], self.identity.dim)

    def _launch(self, chunk: list[np.ndarray]) -> PendingVectors:
        if self._staging is None:
            self._staging = PinnedStaging(self.batch_size, self.mel.max_samples, self.identity.dim, self.device)
        padded = _padded_list([pad_window(w, self.mel.max_samples, self.mel.padding) for w in chunk], self.batch_size)

        def compute(waves: torch.Tensor) -> torch.Tensor:
            return self._unit(self._features(self.mel(waves)))

        with torch.inference_mode():
            return self._staging.launch(padded, len(chunk), compute)

    def _features(self, mel: torch.Tensor) -> torch.Tensor:
        """The model call, at the encoder's precision (the mel before it stays fp32)."""
        with running_at(self.precision, self.device):
            return features_tensor(self.model.get_audio_features(**self._inputs_from_mel(mel)))

    def embed_text(self, labels: Sequence[str], prompts: Sequence[str] = DEFAULT_PROMPTS) -> np.ndarray:
        """Prompt ensemble: every label x template embedded, normalised, averaged per label, normalised."""
        if self.tokenizer is None:
            raise ModelError(f"Model '{self.identity.model_id}' was loaded without a tokenizer, so it cannot embed text.")
        labels, prompts = list(labels), list(prompts)
        if not prompts:
            raise ValueError("at least one prompt template is needed")
        if not all(isinstance(x, str) for x in labels):
            raise TypeError("labels must be strings")
        texts = [p.replace("{label}", label) for label in labels for p in prompts]
        per_prompt = np.empty((len(texts), self.identity.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), TEXT_BATCH):
                chunk = texts[start : start + TEXT_BATCH]
                tokens = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=self._max_text_tokens(), return_tensors="pt"
                )
                with running_at(self.precision, self.device):
                    feats = features_tensor(
                        self.model.get_text_features(
                            input_ids=tokens["input_ids"].to(self.device),
                            attention_mask=tokens["attention_mask"].to(self.device),
                        )
                    )
                per_prompt[start : start + len(chunk)] = self._unit(feats).cpu().numpy()
        return l2_normalise(per_prompt.reshape(len(labels), len(prompts), self.identity.dim).mean(axis=1))

    def _max_text_tokens(self) -> int:
        text_cfg = self.model.config.text_config
        pad = 1 if text_cfg.pad_token_id is None else int(text_cfg.pad_token_id)
        positions = int(text_cfg.max_position_embeddings) - pad - 1  # RoBERTa positions start after pad
        limit = getattr(self.tokenizer, "model_max_length", positions) or positions
        return int(min(limit, positions))

    def _unit(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, dim) float32 unit rows on the model's device (autocast's bf16/fp16 cast back first)."""
        if feats.ndim != 2 or feats.shape[-1] != self.identity.dim:
            raise ModelError(
                f"Model '{self.identity.model_id}' returned features of shape {tuple(feats.shape)}, "
                f"expected (batch, {self.identity.dim}); this transformers version is not supported."
            )
        return torch.nn.functional.normalize(feats.float(), dim=-1)


def features_tensor(out: Any) -> torch.Tensor:
    """The projected embeddings from ``get_audio_features``/``get_text_features`` in any version.

    transformers 4.x returns the tensor itself; 5.x returns a ``BaseModelOutputWithPooling`` whose
    ``pooler_output`` holds the projected (and normalised) embeddings; a ``ClapOutput`` carries
    ``audio_embeds``/``text_embeds``; ``return_dict=False`` gives a tuple with pooler second.
    """
    if isinstance(out, torch.Tensor):
        return out
    for name in ("audio_embeds", "text_embeds", "pooler_output"):
        value = out.get(name) if isinstance(out, dict) else getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[1], torch.Tensor):
        return out[1]
    raise ModelError(f"The model returned {type(out).__name__} without embeddings; this transformers version is not supported.")


class _Joined:
    """Several batches' pending vectors as one ``PendingVectors``, in order."""

    def __init__(self, parts: list[PendingVectors], dim: int) -> None:
        self._parts = parts
        self._dim = dim

    def result(self) -> np.ndarray:
        vectors = [part.result() for part in self._parts]
        return np.concatenate(vectors) if vectors else np.empty((0, self._dim), dtype=np.float32)


def _padded_list(windows: list[np.ndarray], rows: int | None) -> list[np.ndarray]:
    """``windows`` and copies of its first one up to ``rows`` (the batch's one shape)."""
    if rows is None or len(windows) >= rows or not windows:
        return windows
    return windows + [windows[0]] * (rows - len(windows))


def _check_window(wave: Any, max_samples: int) -> None:
    arr = np.asarray(wave)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(f"each audio window must be a non-empty 1-D array of samples, got shape {arr.shape}")
    if arr.shape[0] > max_samples:
        raise ValueError(
            f"an audio window of {arr.shape[0] / SAMPLE_RATE:.3f} s is longer than the model's maximum of "
            f"{max_samples / SAMPLE_RATE:g} s; cut shorter windows before embedding"
        )
    if not np.isfinite(arr).all():
        raise ValueError("an audio window contains NaN or infinite samples")
