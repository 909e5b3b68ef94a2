"""Command-line flags shared by the commands, the request objects they fill, and opening the
archive they name."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable

import click

from indexer.config import (
    CPU_PRECISIONS,
    DEFAULT_BATCH,
    PRECISIONS,
    REQUEST_MAX_DURATION_S,
    EncoderConfig,
    RawPcmFormat,
    RayOptions,
    default_archive_dir,
    resolve_precision,
)

GPU_ONLY_PRECISIONS = tuple(p for p in PRECISIONS if p not in CPU_PRECISIONS + ("auto",))


def collect(cls: type, name: str = "request") -> Callable:
    """The command's options named like the fields of dataclass ``cls`` arrive as one ``cls``
    (argument ``name``), so a command takes one typed request instead of a dozen flags. Put it
    below the ``click.option`` lines it collects."""
    fields = {f.name for f in dataclasses.fields(cls)}

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            kwargs[name] = cls(**{key: kwargs.pop(key) for key in list(kwargs) if key in fields})
            return func(*args, **kwargs)

        return wrapper

    return decorator


def ray_options(func: Callable) -> Callable:
    """``index --engine ray`` parameters, as ``ray`` (a RayOptions; ignored by the local engine)."""

    @click.option("--ray-address", default=None, help="A running Ray cluster (e.g. ray://head:10001 or auto) [default: start a local one].")
    @click.option("--workers", type=click.IntRange(min=1), default=None, help="Model actors [default: one per CPU, or per GPU share].")
    @click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True, help="GPUs each model actor holds.")
    @click.option("--cpus-per-worker", type=click.IntRange(min=1), default=1, show_default=True, help="CPU cores (torch threads) per model actor.")
    @click.option("--staging", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Folder for finished shards, kept until committed [default: ARCHIVE/staging].")
    @functools.wraps(func)
    def wrapper(*args, ray_address, workers, gpus_per_worker, cpus_per_worker, staging, **kwargs):
        kwargs["ray"] = RayOptions(address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                                   cpus_per_worker=cpus_per_worker, staging=staging)
        return func(*args, **kwargs)

    return wrapper


def raw_options(func: Callable) -> Callable:
    """Headerless raw PCM parameters, as ``raw`` (a RawPcmFormat, or None without --raw-rate)."""

    @click.option("--raw-rate", type=int, default=None, help="Sample rate of headerless .raw/.pcm files.")
    @click.option("--raw-channels", type=int, default=1, show_default=True, help="Channels of headerless raw files.")
    @click.option("--raw-format", type=click.Choice(["s16le", "s16be", "s24le", "s32le", "f32le", "u8"]), default="s16le", show_default=True)
    @functools.wraps(func)
    def wrapper(*args, raw_rate, raw_channels, raw_format, **kwargs):
        kwargs["raw"] = RawPcmFormat(raw_rate, raw_channels, raw_format) if raw_rate else None
        return func(*args, **kwargs)

    return wrapper


def max_duration_option(func: Callable) -> Callable:
    return click.option(
        "--max-duration", "max_duration_s", type=click.FloatRange(min=1), default=REQUEST_MAX_DURATION_S,
        show_default=True, help="Seconds of audio one file may hold; longer files (or lying headers) are refused.",
    )(func)


def _model_flags(model_help: str, archive: bool = True) -> Callable:
    def decorator(func: Callable) -> Callable:
        @click.option("--model", default=None, envvar="SOUNDTRACE_MODEL", show_envvar=True,
                      help=f"CLAP model id or local directory [default: {model_help}].")
        @click.option("--device", default="auto", envvar="SOUNDTRACE_DEVICE", show_envvar=True, show_default=True,
                      help="auto, cpu, cuda or cuda:N.")
        @click.option("--precision", type=click.Choice(PRECISIONS, case_sensitive=False), default="auto",
                      envvar="SOUNDTRACE_PRECISION", show_envvar=True, show_default=True,
                      help="The model call's arithmetic: auto is bf16 on CUDA and fp32 on a CPU; tf32 and fp16 need CUDA.")
        @click.option("--batch-size", default=None, type=click.IntRange(1, 1024),
                      help=f"Windows per model call [default: the device's, {DEFAULT_BATCH['cpu']} on a CPU, "
                           f"{DEFAULT_BATCH['cuda']} on CUDA].")
        @click.option("--cache-dir", default=None, type=click.Path(file_okay=False), help="Hugging Face cache directory for model weights.")
        @click.option("--threads", default=None, type=click.IntRange(1, 256), help="CPU threads for torch.")
        @functools.wraps(func)
        def wrapper(*args, model, device, precision, batch_size, cache_dir, threads, gpu_memory=None, **kwargs):
            kwargs["encoder_config"] = EncoderConfig(
                model=model or "", device=device, batch_size=batch_size, cache_dir=cache_dir, threads=threads,
                precision=precision.lower(), gpu_memory_gb=gpu_memory,
            )
            if precision.lower() in GPU_ONLY_PRECISIONS:  # refused now, not when the model first loads
                from indexer.model.devices import resolve_device

                resolve_precision(precision, resolve_device(device).type)
            return func(*args, **kwargs)

        if not archive:
            return wrapper
        return click.option(
            "--gpu-memory", default=None, type=click.FloatRange(0, 1 << 20), metavar="GB",
            help="GPU memory the archive's vectors may keep resident on CUDA (audits, suggestions) "
                 "[default: 80% of the free memory]; 0 streams them on every scan.")(wrapper)

    return decorator


model_options = _model_flags("the archive's own, else laion/clap-htsat-fused")
"""Model flags of the commands that work on an archive (which remembers its model)."""

file_model_options = _model_flags("laion/clap-htsat-fused", archive=False)
"""Model flags of ``classify``, which has no archive."""


def archive_option(func: Callable) -> Callable:
    return click.option(
        "--archive", "archive_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Archive directory [default: $SOUNDTRACE_ARCHIVE or ./soundtrace-archive].",
    )(func)


def check_model_folder(manifest, model: str | None) -> None:
    """ModelMismatchError now, not at the first words or file that need the model, when --model
    names a saved folder whose weights are not the archive's (read without torch; a hub id is
    checked when it loads)."""
    from indexer.embedding import ModelIdentity
    from indexer.model.revision import folder_revision

    revision = folder_revision(model)
    if revision is not None:
        manifest.check_model(ModelIdentity(str(model), revision, manifest.dim))


def open_archive(archive_dir: Path | None, encoder_config: EncoderConfig | None = None, **kwargs):
    """The archive; its model (``--model``, else the archive's own) loads on first use, which a
    search or audit of remembered words never reaches. Advice on missing weights names ``--model``."""
    from indexer.api import Archive
    from indexer.errors import ModelNotAvailableError

    archive = Archive.open(archive_dir or default_archive_dir(), encoder_config=encoder_config, **kwargs)
    try:
        check_model_folder(archive.manifest, encoder_config.model if encoder_config else None)
    except Exception:
        archive.close()
        raise
    archive.model_advice = ModelNotAvailableError.MODEL_OPTION
    return archive
