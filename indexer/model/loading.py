"""Loading a CLAP: a saved folder or the Hugging Face cache, downloading only when online, and one
sentence saying how to get the weights when neither works (never a traceback)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from indexer.config import EncoderConfig
from indexer.embedding import ModelIdentity
from indexer.errors import ModelError, ModelNotAvailableError
from indexer.model.devices import resolve_device
from indexer.model.encoder import ClapEncoder
from indexer.model.revision import local_revision

HUB_PROBE_TIMEOUT_S = 5.0
"""How long we wait to learn whether the hub is reachable before giving up on a download."""

_MODEL_OPTION = ModelNotAvailableError.MODEL_OPTION
"""How the advice names the way to choose a model (a Python caller re-raises naming its parameter)."""

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def load_encoder(cfg: EncoderConfig) -> ClapEncoder:
    """Load a CLAP from a local directory or the Hugging Face cache (downloading only if online)."""
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise ValueError("threads must be at least 1")
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    cfg = cfg.for_device(device.type)  # batch size and precision for this device; tf32/fp16 on a CPU stop here
    local = Path(cfg.model).expanduser()
    model_id = cfg.model
    if local.exists() or _looks_like_path(cfg.model):
        model, processor, revision = _load_local(cfg.model, local)
        model_id = str(local.resolve())  # the archive reloads it later, maybe from another directory
    else:
        model, processor, revision = _load_hub(cfg)
    identity = ModelIdentity(model_id=model_id, revision=revision, dim=int(model.config.projection_dim))
    return ClapEncoder(model, processor.feature_extractor, processor.tokenizer, identity, device, cfg.batch_size, cfg.precision)


def _looks_like_path(name: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else that does not exist is a missing directory."""
    return (
        name.startswith(("/", "./", "../", "~", "."))
        or name.endswith(("/", os.sep))
        or "\\" in name
        or name.count("/") > 1
    )


def _load_local(name: str, path: Path) -> tuple[Any, Any, str]:
    hint = f"pass {_MODEL_OPTION} pointing at a CLAP saved with save_pretrained, or a hub id such as laion/clap-htsat-fused"
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
            f"download); check the id, revision and connection, or pass {_MODEL_OPTION} pointing at a saved CLAP."
        ) from exc.__cause__
    config_path = _cached_file(cfg, "config.json")
    return model, processor, Path(config_path).parent.name if config_path else (cfg.revision or "unknown")


def _not_cached_message(model_id: str) -> str:
    return (
        f"Model '{model_id}' is not in the local Hugging Face cache and cannot be downloaded here; run "
        f"`{download_command(model_id)}` on a machine with internet access (or copy the cache), "
        f"or pass {_MODEL_OPTION} pointing at a saved CLAP."
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
