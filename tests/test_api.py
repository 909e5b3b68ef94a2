"""The Python API a notebook or script uses, on the tiny CLAP through the real loading path."""

from __future__ import annotations

from pathlib import Path

import pytest

import indexer
from indexer import Archive, EncoderConfig, classify_audio
from indexer.model.loading import load_encoder
from indexer.errors import ModelMismatchError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"


def test_classify_audio_returns_probabilities_best_first(tiny_clap_dir):
    scores = classify_audio(SAMPLES / "greeting_polite.opus", "greeting, complaint，音乐", model=str(tiny_clap_dir), device="cpu")
    assert set(scores) == {"greeting", "complaint", "音乐"}
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert list(scores.values()) == sorted(scores.values(), reverse=True)
    assert all(0.0 <= p <= 1.0 for p in scores.values())


def test_archive_loads_its_own_model_on_first_search(tiny_clap_dir, tmp_path):
    encoder = load_encoder(EncoderConfig(model=str(tiny_clap_dir)))
    with Archive.open(tmp_path / "arch", encoder=encoder, create=True) as archive:
        archive.index([SAMPLES / "tone_440hz_3s.flac", SAMPLES / "greeting_polite.opus"])
        expected = [(h.path, round(h.score, 5)) for h in archive.search("speech", k=2)]
    with Archive.open(tmp_path / "arch") as archive:  # no encoder given: the manifest's model is loaded
        got = [(h.path, round(h.score, 5)) for h in archive.search("speech", k=2)]
        assert archive.encoder.identity.revision == encoder.identity.revision
    assert got == expected


def test_archive_refuses_a_different_model_given_explicitly(tiny_clap_dir, tmp_path):
    from indexer.model.tiny_clap import build_tiny_clap

    encoder = load_encoder(EncoderConfig(model=str(tiny_clap_dir)))
    with Archive.open(tmp_path / "arch", encoder=encoder, create=True) as archive:
        archive.index([SAMPLES / "tone_440hz_3s.flac"])
    other = load_encoder(EncoderConfig(model=str(build_tiny_clap(tmp_path / "other", seed=3))))
    with pytest.raises(ModelMismatchError):
        Archive.open(tmp_path / "arch", encoder=other)


def test_package_exports_the_documented_api():
    for name in ("Archive", "classify_audio", "classify_file", "IndexOptions", "SearchFilters", "errors"):
        assert getattr(indexer, name) is not None
    with pytest.raises(AttributeError):
        indexer.no_such_thing  # noqa: B018
