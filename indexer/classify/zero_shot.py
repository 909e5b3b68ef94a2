"""The origin tool's single-file zero-shot mode: one recording, a few labels, no archive.

Scores are cosine similarities between the label (prompt ensemble) and the recording's best
window. Probabilities are CLAP's softmax over the label set at its learned logit scale. The
confidence of a label is its probability against its strongest rival, p / (p + p_rival): 0.5 is
a coin toss, above 0.7 the origin tool called "high". With a single label there is nothing to
share probability with (softmax over one label is always 1), so probability and confidence are
None and only the cosine score speaks.

A label is *detected* when it is the top label (exclusive mode) or reaches the threshold
(multi-label mode), and its confidence reaches ``min_confidence`` (the origin tool's minimum
confidence for alerts; a lone label has no rival, so it is not held to it). ``min_score`` drops
labels scoring below it from the result altogether. Label sets use the same two rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.audio import decode as audio
from indexer.audio.decode import AudioInfo
from indexer.audio.windows import QualityAccumulator, RecordingQuality
from indexer.label_names import parse_labels
from indexer.audit.scoring import Rivals, softmax_columns
from indexer.config import DEFAULT_MODEL, REQUEST_MAX_DURATION_S, DecodeOptions, EncoderConfig, WindowConfig
from indexer.embedding import Encoder
from indexer.errors import AudioError, ModelNotAvailableError
from indexer.indexing.one_file import embed_file
from indexer.search.highlight import refine_samples

HIGH_CONFIDENCE = 0.7


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float
    probability: float | None
    """CLAP's softmax over the label set; None for a single label, where it would always be 1."""
    confidence: float | None
    """Against the strongest rival label; None without a rival."""
    best_start_s: float
    best_end_s: float
    detected: bool
    highlight: tuple[float, float] | None = None
    """The 1–3 s of the best window that score highest (``search.highlight``), for detected labels."""

    @property
    def confidence_level(self) -> str:
        if self.confidence is None:
            return "n/a: one label, no rival"
        if self.confidence > HIGH_CONFIDENCE:
            return "high"
        return "medium" if self.confidence > 0.55 else "low"


@dataclass(frozen=True)
class Classification:
    path: Path
    info: AudioInfo
    quality: RecordingQuality
    duration_s: float
    labels: list[LabelScore]
    warnings: list[str] = field(default_factory=list)
    windows: int = 0
    """Windows embedded (for a progress display's rate)."""

    @property
    def detected(self) -> list[LabelScore]:
        return [s for s in self.labels if s.detected]

    def to_dict(self) -> dict:
        """For JSON: the file's facts and every label reported."""
        return {
            "file": str(self.path), "duration_s": self.duration_s, "sample_rate": self.info.sample_rate,
            "channels": self.info.channels, "format": self.info.format, "warnings": self.warnings,
            "labels": [{**vars(s), "confidence_level": s.confidence_level} for s in self.labels],
        }


@dataclass(frozen=True)
class ClassifyOptions:
    """How one file is classified.

    Exclusive mode (default) detects the top label; ``multi_label`` detects every label whose
    cosine score reaches ``threshold``; either way a detected label's confidence must reach
    ``min_confidence``. ``min_score`` drops labels scoring below it entirely.
    """

    windows: WindowConfig = WindowConfig()
    decode: DecodeOptions = DecodeOptions(max_duration_s=REQUEST_MAX_DURATION_S)
    multi_label: bool = False
    threshold: float = 0.3
    min_score: float | None = None
    min_confidence: float | None = None
    highlight: bool = True
    """Refine each detected label's best window to the 1–3 s that matter (a few short embeddings)."""


@dataclass(frozen=True)
class LabelQueries:
    """Labels cleaned and embedded once, for classifying many files against them."""

    names: list[str]
    vectors: np.ndarray  # (labels, dim) prompt-ensemble text vectors

    @classmethod
    def embed(cls, labels: str | Sequence[str], encoder: Encoder) -> "LabelQueries":
        names = parse_labels(labels)
        return cls(names, encoder.embed_text(names))


def classify_file(
    path: str | Path, labels: str | Sequence[str] | LabelQueries, encoder: Encoder,
    options: ClassifyOptions = ClassifyOptions(),
) -> Classification:
    """Score ``labels`` against one file, streamed window by window."""
    path = Path(path)
    queries = labels if isinstance(labels, LabelQueries) else LabelQueries.embed(labels, encoder)
    names, text_vectors = queries.names, queries.vectors
    quality = QualityAccumulator()
    info, embedded = embed_file(path, encoder, options.windows, options.decode, quality=quality)
    multi_label, threshold, min_score = options.multi_label, options.threshold, options.min_score
    cut, rows = [], []  # windows without samples, and one row of label scores each: flat memory
    for window, vector in embedded:
        cut.append(window)
        rows.append(text_vectors @ vector)
    if not cut:
        raise AudioError(f"{path.name} holds no audio to classify.")
    summary = quality.result()
    similarity = np.stack(rows)  # (windows, labels)
    best_window = similarity.argmax(axis=0)
    scores = similarity.max(axis=0)
    if len(names) > 1:
        probabilities = softmax_columns(encoder.logit_scale * scores[:, None])
        confidences = [float(c) for c in Rivals.of(probabilities).confidence(probabilities)[:, 0]]
        probabilities = [float(p) for p in probabilities[:, 0]]
    else:
        probabilities = confidences = [None]
    top = int(np.argmax(scores))
    results = []
    for i, name in enumerate(names):
        if min_score is not None and scores[i] < min_score:
            continue
        w = cut[int(best_window[i])]
        detected = bool(scores[i] >= threshold) if multi_label else i == top
        if options.min_confidence is not None and confidences[i] is not None:
            detected = detected and confidences[i] >= options.min_confidence
        spot = _highlight(path, encoder, options.decode, w, text_vectors[i]) if detected and options.highlight else None
        results.append(
            LabelScore(name, float(scores[i]), probabilities[i], confidences[i], w.start_s, w.end_s, detected, spot)
        )
    results.sort(key=lambda s: s.score, reverse=True)
    return Classification(path, info, summary, max(w.end_s for w in cut), results, _warnings(summary), len(cut))


def _highlight(path: Path, encoder: Encoder, decode: DecodeOptions, window, label_vector: np.ndarray) -> tuple[float, float]:
    _, samples = audio.load(path, replace(decode, channels="mix"), window.start_s, window.end_s)
    spot = refine_samples(encoder, samples[0], window.start_s, label_vector)
    return spot.start_s, spot.end_s


def _warnings(quality: RecordingQuality) -> list[str]:
    warnings = []
    if quality.is_silent:
        warnings.append("The recording is a flat line (silent or dead channel): scores mean nothing.")
    if quality.is_clipped:
        warnings.append(f"The recording is heavily clipped ({quality.clipped_fraction:.1%} of samples at full scale).")
    return warnings


@lru_cache(maxsize=2)
def _cached_encoder(model: str, device: str) -> Encoder:
    from indexer.model.loading import load_encoder

    return load_encoder(EncoderConfig(model=model, device=device))


def process_encoder(model: str, device: str) -> Encoder:
    """The model for the Python API's calls, loaded once per process; missing weights are one
    sentence naming the ``model=`` parameter (the CLI's own advice names ``--model DIR``)."""
    try:
        return _cached_encoder(model, device)
    except ModelNotAvailableError as exc:
        raise exc.naming("model=DIR") from None


def classify_audio(
    path: str | Path, labels: str | Sequence[str], model: str = DEFAULT_MODEL, device: str = "auto"
) -> dict[str, float | None]:
    """The origin tool's API: ``{label: probability}``, best first (None for a single label: see the
    module docstring). The model is loaded once per process."""
    result = classify_file(path, labels, process_encoder(model, device))
    return {s.label: s.probability for s in result.labels}
