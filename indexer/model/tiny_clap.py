"""Stand-in CLAP models for machines that cannot download weights.

``build_tiny_clap`` writes a few-MB CLAP with random weights to a directory, in the same layout
``save_pretrained`` gives the real checkpoint, so tests and the offline demo notebook load it
through exactly the same ``load_encoder`` path as ``laion/clap-htsat-fused``. Its vectors mean
nothing; its shapes, preprocessing and determinism are the real ones.
``build_full_size_random_clap`` costs what the real model costs, for throughput benchmarks.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from indexer.embedding import ModelIdentity
from indexer.model.devices import resolve_device
from indexer.model.encoder import ClapEncoder
from indexer.model.loading import quiet_transformers

TINY_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 79,  # 77 tokens + RoBERTa's padding offset of 2
}
TINY_AUDIO_CONFIG: dict[str, Any] = {
    # spec_size 256 and 64 mel bins are what lets a 10 s window (1001 frames) in; kept from the real one.
    "spec_size": 256,
    "num_mel_bins": 64,
    "window_size": 8,
    "patch_embeds_hidden_size": 16,
    "depths": [1, 1, 1, 1],
    "num_attention_heads": [1, 1, 2, 2],
    "hidden_size": 128,  # patch_embeds_hidden_size * 2 ** (len(depths) - 1)
}
TINY_PROJECTION_DIM = 32
TINY_MAX_TOKENS = 77
TINY_VOCAB_SIZE = 512

# The real laion/clap-htsat-fused preprocessor_config.json, minus derived fields.
CLAP_FEATURE_EXTRACTOR: dict[str, Any] = {
    "feature_size": 64,
    "sampling_rate": 48_000,
    "hop_length": 480,
    "max_length_s": 10,
    "fft_window_size": 1024,
    "padding_value": 0.0,
    "return_attention_mask": False,
    "frequency_min": 50,
    "frequency_max": 14_000,
    "top_db": None,
    "truncation": "fusion",
    "padding": "repeatpad",
}

_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa ids 0..4; ClapTextConfig pads with 1

_CORPUS_SOUNDS = (
    "dog barking", "cat meowing", "glass breaking", "a door slamming", "footsteps on gravel",
    "customer shouting at agent", "hold music", "a phone ringing", "keyboard typing", "people talking",
    "a baby crying", "laughter", "applause", "rain on a roof", "thunder", "wind blowing", "birds singing",
    "a car engine starting", "a siren", "a horn honking", "a train passing", "an airplane overhead",
    "bearing squeal", "a motor humming", "a fan whirring", "a drill", "hammering", "a chainsaw",
    "water running", "a toilet flushing", "a kettle whistling", "frying food", "a dishwasher",
    "an alarm clock", "a smoke alarm", "a gunshot", "an explosion", "fireworks", "a church bell",
    "a piano", "an acoustic guitar", "drums", "a violin", "singing", "whistling", "coughing",
    "sneezing", "snoring", "breathing", "silence", "static noise", "a busy street", "a crowd cheering",
    "an angry customer", "an emergency call", "a complaint", "abusive language", "a calm conversation",
)
_CORPUS_TEMPLATES = ("{label}", "the sound of {label}", "this is a sound of {label}", "a recording of {label}")


def build_tiny_clap(directory: Path, seed: int = 0, fused: bool = True) -> Path:
    """Write a tiny random-weight CLAP (model + ClapProcessor) to ``directory``; returns it.

    ``fused=True`` mirrors clap-htsat-fused (fusion enabled, "fusion" truncation, HTK mel bank);
    ``fused=False`` mirrors an unfused checkpoint ("rand_trunc", Slaney mel bank).
    Same seed, same files: the directory's content hash is reproducible.
    """
    from transformers import ClapConfig, ClapModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    config = ClapConfig(
        text_config={**TINY_TEXT_CONFIG, "vocab_size": len(tokenizer)},
        audio_config={**TINY_AUDIO_CONFIG, "enable_fusion": fused},
        projection_dim=TINY_PROJECTION_DIM,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config).eval()
    return _save(model, tokenizer, fused, directory)


def build_full_size_random_clap(
    device: str = "cpu", seed: int = 0, fused: bool = True, batch_size: int | None = None, precision: str = "auto"
) -> ClapEncoder:
    """A ``ClapEncoder`` over ``ClapModel(ClapConfig())`` with random weights: real cost, no download.

    Audio only (no tokenizer): ``embed_text`` raises ModelError. For benchmarks, not for search.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    config = ClapConfig(audio_config={"enable_fusion": fused})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config).eval()
    extractor = ClapFeatureExtractor(**{**CLAP_FEATURE_EXTRACTOR, "truncation": "fusion" if fused else "rand_trunc"})
    identity = ModelIdentity(
        model_id=f"random-clap-htsat-{'fused' if fused else 'unfused'}", revision=f"seed-{seed}", dim=config.projection_dim
    )
    return ClapEncoder(model, extractor, None, identity, resolve_device(device), batch_size, precision)


def save_full_size_random_clap(directory: Path, seed: int = 0, fused: bool = True) -> Path:
    """``ClapModel(ClapConfig())`` with random weights saved as a loadable folder (≈ 600 MB): the real
    cost through the real loading path, e.g. for model actors on Ray. Its tokenizer is the tiny one
    (text vectors from it mean nothing; benchmarks embed audio)."""
    from transformers import ClapConfig, ClapModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    config = ClapConfig(text_config={"vocab_size": len(tokenizer)}, audio_config={"enable_fusion": fused})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config).eval()
    return _save(model, tokenizer, fused, directory)


def _save(model, tokenizer, fused: bool, directory: Path) -> Path:
    """The model and a ClapProcessor in the layout ``from_pretrained`` reads."""
    from transformers import ClapFeatureExtractor, ClapProcessor

    extractor = ClapFeatureExtractor(**{**CLAP_FEATURE_EXTRACTOR, "truncation": "fusion" if fused else "rand_trunc"})
    with quiet_transformers():
        model.save_pretrained(directory)
        ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
        extractor.save_pretrained(directory)  # preprocessor_config.json too, the layout transformers 4.x reads
    return directory


def _train_tokenizer():
    """A byte-level BPE RobertaTokenizer trained on a built-in corpus of sound descriptions."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    corpus = [t.replace("{label}", s) for s in _CORPUS_SOUNDS for t in _CORPUS_TEMPLATES]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=TINY_VOCAB_SIZE, min_frequency=1, special_tokens=_SPECIAL_TOKENS, show_progress=False
    )
    with tempfile.TemporaryDirectory(prefix="soundtrace-bpe-") as tmp:
        bpe.save_model(tmp)  # vocab.json + merges.txt, the files a RoBERTa tokenizer loads
        with quiet_transformers():
            return RobertaTokenizerFast.from_pretrained(tmp, model_max_length=TINY_MAX_TOKENS)
