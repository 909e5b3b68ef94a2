"""The real CLAP encoder: loading (hub id or local directory) and deterministic embedding.

The only engine module that imports torch and transformers (with its helpers ``melspec`` and
``tiny_clap``). Two things the stock transformers path gets wrong for an archive are fixed here:
the feature extractor's random crop / random ``is_longer`` flag (windows are cut by the caller,
at most ``max_window_s``, and ``is_longer`` is pinned False, so a vector never depends on its
batch), and its slow numpy front end (replaced by ``melspec.LogMel`` on the model's device).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from indexer.config import SAMPLE_RATE, EncoderConfig
from indexer.embedding import DEFAULT_PROMPTS, ModelIdentity, l2_normalise
from indexer.errors import DeviceError, ModelError, ModelNotAvailableError
from indexer.melspec import LogMel

TEXT_BATCH = 64
"""Prompts embedded per text-tower call; bounds memory for long label sets."""

HUB_PROBE_TIMEOUT_S = 5.0
"""How long we wait to learn whether the hub is reachable before giving up on a download."""

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_HASH_CHUNK = 1 << 20


class ClapEncoder:
    """A loaded CLAP satisfying ``indexer.embedding.Encoder``; every row depends only on its input."""

    def __init__(
        self,
        model: Any,
        feature_extractor: Any,
        tokenizer: Any | None,
        identity: ModelIdentity,
        device: torch.device | str,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.device = torch.device(device)
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

    def audio_inputs(self, windows: Sequence[np.ndarray], rows: int | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for ``get_audio_features``: mels (B, 4|1, T, F) and ``is_longer`` pinned False.

        A fused model takes the padded mel four times (global view + three "crops", exactly what the
        extractor builds for audio no longer than its maximum); an unfused one takes it once.
        ``rows`` pads the batch to that many with copies of the first window's mel.
        """
        mel = self.mel.features(windows)  # (n, T, F)
        if rows is not None and rows > mel.shape[0]:
            mel = torch.cat([mel, mel[:1].expand(rows - mel.shape[0], -1, -1)])
        mel = mel.unsqueeze(1)  # (B, 1, T, F)
        if self._fused:
            mel = mel.expand(-1, 4, -1, -1)
        is_longer = torch.zeros((mel.shape[0], 1), dtype=torch.bool, device=self.device)
        return {"input_features": mel, "is_longer": is_longer}

    def embed_audio(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dim) float32 unit vectors; each window at most ``max_window_s`` (ValueError otherwise).

        The model always runs on batches of exactly ``batch_size`` windows, a short last batch
        padded with copies of its first window: BLAS and attention kernels are chosen by matrix
        shape, so a window's vector then has the same bits alone, in a full batch or in a
        resumed run's short one (with peers of another shape they differ by ~1e-7)."""
        windows = list(windows)
        for w in windows:
            _check_window(w, self.mel.max_samples)
        out = np.empty((len(windows), self.identity.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(windows), self.batch_size):
                chunk = windows[start : start + self.batch_size]
                feats = features_tensor(self.model.get_audio_features(**self.audio_inputs(chunk, self.batch_size)))
                out[start : start + len(chunk)] = self._to_unit_numpy(feats)[: len(chunk)]
        return out

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
                feats = features_tensor(
                    self.model.get_text_features(
                        input_ids=tokens["input_ids"].to(self.device),
                        attention_mask=tokens["attention_mask"].to(self.device),
                    )
                )
                per_prompt[start : start + len(chunk)] = self._to_unit_numpy(feats)
        return l2_normalise(per_prompt.reshape(len(labels), len(prompts), self.identity.dim).mean(axis=1))

    def _max_text_tokens(self) -> int:
        text_cfg = self.model.config.text_config
        pad = 1 if text_cfg.pad_token_id is None else int(text_cfg.pad_token_id)
        positions = int(text_cfg.max_position_embeddings) - pad - 1  # RoBERTa positions start after pad
        limit = getattr(self.tokenizer, "model_max_length", positions) or positions
        return int(min(limit, positions))

    def _to_unit_numpy(self, feats: torch.Tensor) -> np.ndarray:
        if feats.ndim != 2 or feats.shape[-1] != self.identity.dim:
            raise ModelError(
                f"Model '{self.identity.model_id}' returned features of shape {tuple(feats.shape)}, "
                f"expected (batch, {self.identity.dim}); this transformers version is not supported."
            )
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)


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


# --- device ------------------------------------------------------------------------------------


def resolve_device(spec: str) -> torch.device:
    """"auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N"; DeviceError if absent."""
    s = (spec or "auto").strip().lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        index_text = s.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise DeviceError(f"Device '{spec}' is not valid; use auto, cpu, cuda or cuda:N with N a GPU number.")
        if not torch.cuda.is_available():
            raise DeviceError(f"Device '{spec}' was requested but torch sees no CUDA GPU on this machine; use --device cpu or auto.")
        count = torch.cuda.device_count()
        index = int(index_text) if index_text else 0
        if index >= count:
            raise DeviceError(f"Device '{spec}' does not exist: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}.")
        return torch.device("cuda", index)
    raise DeviceError(f"Device '{spec}' is not known; use auto, cpu, cuda or cuda:N.")


# --- loading -----------------------------------------------------------------------------------


def load_encoder(cfg: EncoderConfig) -> ClapEncoder:
    """Load a CLAP from a local directory or the Hugging Face cache (downloading only if online)."""
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise ValueError("threads must be at least 1")
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    local = Path(cfg.model).expanduser()
    model_id = cfg.model
    if local.exists() or _looks_like_path(cfg.model):
        model, processor, revision = _load_local(cfg.model, local)
        model_id = str(local.resolve())  # the archive reloads it later, maybe from another directory
    else:
        model, processor, revision = _load_hub(cfg)
    identity = ModelIdentity(model_id=model_id, revision=revision, dim=int(model.config.projection_dim))
    return ClapEncoder(model, processor.feature_extractor, processor.tokenizer, identity, device, cfg.batch_size)


def _looks_like_path(name: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else that does not exist is a missing directory."""
    return (
        name.startswith(("/", "./", "../", "~", "."))
        or name.endswith(("/", os.sep))
        or "\\" in name
        or name.count("/") > 1
    )


def _load_local(name: str, path: Path) -> tuple[Any, Any, str]:
    hint = "pass --model DIR pointing at a CLAP saved with save_pretrained, or a hub id such as laion/clap-htsat-fused"
    if not path.is_dir():
        raise ModelNotAvailableError(f"Model directory '{name}' does not exist (or is not a directory); {hint}.")
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(f"Model directory '{name}' has no config.json, so it is not a saved model; {hint}.")
    _check_is_clap(name, path / "config.json")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise ModelNotAvailableError(
            f"Model directory '{name}' has a config.json but no weights (model.safetensors or pytorch_model.bin); "
            "copy the complete folder written by save_pretrained."
        )
    try:
        model, processor = _from_pretrained(str(path), local_files_only=True)
    except _MissingFiles as exc:
        raise ModelNotAvailableError(
            f"Model directory '{name}' is incomplete: its {exc.part} files are missing; copy the complete folder "
            "written by save_pretrained."
        ) from exc.__cause__
    return model, processor, local_revision(path)


def _load_hub(cfg: EncoderConfig) -> tuple[Any, Any, str]:
    kwargs = {"revision": cfg.revision, "cache_dir": cfg.cache_dir}
    config_path = _cached_file(cfg, "config.json")
    if config_path is not None:
        _check_is_clap(cfg.model, Path(config_path))
        try:
            model, processor = _from_pretrained(cfg.model, local_files_only=True, **kwargs)
            return model, processor, Path(config_path).parent.name
        except _MissingFiles:
            pass  # partly cached: fetch the rest if we can
    if _offline() or not _hub_reachable(cfg.model, cfg.revision):
        raise ModelNotAvailableError(_not_cached_message(cfg.model))
    try:
        model, processor = _from_pretrained(cfg.model, local_files_only=False, **kwargs)
    except _MissingFiles as exc:
        raise ModelNotAvailableError(
            f"Model '{cfg.model}' could not be fetched from the Hugging Face hub (its {exc.part} files did not "
            "download); check the id, revision and connection, or pass --model DIR pointing at a saved CLAP."
        ) from exc.__cause__
    config_path = _cached_file(cfg, "config.json")
    return model, processor, Path(config_path).parent.name if config_path else (cfg.revision or "unknown")


def _not_cached_message(model_id: str) -> str:
    return (
        f"Model '{model_id}' is not in the local Hugging Face cache and cannot be downloaded here; run "
        f"`{download_command(model_id)}` on a machine with internet access (or copy the cache), "
        "or pass --model DIR pointing at a saved CLAP."
    )


def download_command(model_id: str) -> str:
    """The download command of the installed hub client: ``hf`` since 0.34, ``huggingface-cli`` before."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("huggingface_hub").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        major, minor = 1, 0
    tool = "hf" if (major, minor) >= (0, 34) else "huggingface-cli"
    return f"{tool} download {model_id}"


class _MissingFiles(Exception):
    """Some files of a checkpoint are absent (not cached, not copied); ``part`` says which."""

    def __init__(self, part: str) -> None:
        super().__init__(part)
        self.part = part


def _from_pretrained(name: str, **kwargs: Any) -> tuple[Any, Any]:
    """ClapModel + ClapProcessor through the stock path; absent files raise ``_MissingFiles``."""
    from transformers import ClapModel, ClapProcessor

    with quiet_transformers():
        part = "config or weight"
        try:
            model, info = ClapModel.from_pretrained(name, output_loading_info=True, **kwargs)
            part = "feature extractor or tokenizer"
            processor = ClapProcessor.from_pretrained(name, **kwargs)
        except OSError as exc:
            raise _MissingFiles(part) from exc
        except Exception as exc:  # corrupt weights, wrong shapes, unreadable json, ...
            raise ModelError(
                f"Model '{name}' could not be loaded as a CLAP model ({type(exc).__name__}: {_first_line(exc)}); "
                "its files may be corrupt or from another architecture."
            ) from exc
    _check_tokenizer(name, processor.tokenizer, int(model.config.text_config.vocab_size))
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith(("position_ids", "token_type_ids")))
    if missing:
        raise ModelError(
            f"Model '{name}' is missing {len(missing)} weight tensor(s) (e.g. {missing[0]}), so parts of it would be "
            "random; copy the complete checkpoint."
        )
    return model, processor


def _check_tokenizer(name: str, tokenizer: Any, vocab_size: int) -> None:
    """transformers 5 silently builds a 5-token tokenizer when the vocabulary files are absent."""
    size = len(tokenizer)
    if size > vocab_size:
        raise ModelError(f"Model '{name}' has a tokenizer of {size} tokens for a text model of only {vocab_size}.")
    if size < vocab_size // 2:
        raise _MissingFiles("tokenizer vocabulary (tokenizer.json, or vocab.json and merges.txt)")


def _check_is_clap(name: str, config_path: Path) -> None:
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"Model '{name}' has an unreadable config.json ({_first_line(exc)}).") from exc
    if model_type != "clap":
        raise ModelError(f"Model '{name}' is a '{model_type}' model, not a CLAP model (config.json model_type 'clap').")


def _cached_file(cfg: EncoderConfig, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(cfg.model, filename, cache_dir=cfg.cache_dir, revision=cfg.revision)
    except Exception:  # invalid repo id and the like: treat as not cached
        return None
    return found if isinstance(found, str) else None


def _offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").strip().lower() in truthy for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(model_id: str, revision: str | None, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the hub answers for this repo: one GET, bounded in a daemon thread (DNS ignores timeouts).

    transformers retries an unreachable hub for minutes per file; this answers in seconds. Only a
    2xx/3xx counts: proxies and captive portals answer anything with an error page.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            from urllib.parse import quote

            from huggingface_hub import constants
            from huggingface_hub.utils import build_hf_headers, get_session

            url = f"{constants.ENDPOINT}/api/models/{model_id}"
            if revision:
                url += f"/revision/{quote(revision, safe='')}"
            response = get_session().get(url, headers=build_hf_headers(), timeout=timeout)
            result.append(response.status_code < 400)
        except Exception:
            result.append(False)

    thread = threading.Thread(target=probe, name="soundtrace-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result and result[0])


def local_revision(path: Path) -> str:
    """Stable short content hash of a saved model directory: each file's name, size, first and last MiB.

    Cheap (at most 2 MiB read per file, not the 600 MB of weights) and independent of mtimes, so a
    copied folder keeps its revision; a change confined to the middle of a weight file is not seen.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).iterdir() if p.is_file() and not p.name.startswith(".")):
        size = file.stat().st_size
        digest.update(f"{file.name}\0{size}\0".encode())
        with file.open("rb") as fh:
            digest.update(fh.read(_HASH_CHUNK))
            if size > 2 * _HASH_CHUNK:
                fh.seek(size - _HASH_CHUNK)
                digest.update(fh.read(_HASH_CHUNK))
    return "sha256:" + digest.hexdigest()[:16]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers/hub logging, progress bars and warnings while loading, then restore them."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hub_bars_off = hub_utils.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_utils.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
        if not hub_bars_off:
            hub_utils.enable_progress_bars()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def gpu_matmul(device: torch.device | str, chunk_rows: int = 1 << 18) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """``queries @ matrix.T`` on a CUDA device, streamed in row chunks to bound GPU memory; None off
    the GPU, where numpy's BLAS is as fast. Full-archive audits use it when the model is on a GPU."""
    device = torch.device(device)
    return _chunked_product(device, chunk_rows) if device.type == "cuda" else None


def _chunked_product(device: torch.device, chunk_rows: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def product(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device)
        out = np.empty((queries.shape[0], matrix.shape[0]), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, matrix.shape[0], chunk_rows):
                block = torch.from_numpy(np.ascontiguousarray(matrix[start : start + chunk_rows])).to(device, non_blocking=True)
                out[:, start : start + block.shape[0]] = (q @ block.T).cpu().numpy()
        return out

    return product
