"""Command-line flags shared by ``cli.py`` and ``cli_audit.py``, and opening the archive they name."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import click

from .config import EncoderConfig, default_archive_dir


def model_options(func: Callable) -> Callable:
    """Flags shared by every command that may run the model."""

    @click.option("--model", default=None, help="CLAP model id or local directory [default: the archive's, else laion/clap-htsat-fused].")
    @click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
    @click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 1024), help="Windows per model call.")
    @click.option("--cache-dir", default=None, type=click.Path(file_okay=False), help="Hugging Face cache directory for model weights.")
    @click.option("--threads", default=None, type=click.IntRange(1, 256), help="CPU threads for torch.")
    @functools.wraps(func)
    def wrapper(*args, model, device, batch_size, cache_dir, threads, **kwargs):
        kwargs["encoder_config"] = EncoderConfig(
            model=model or "", device=device, batch_size=batch_size, cache_dir=cache_dir, threads=threads
        )
        return func(*args, **kwargs)

    return wrapper


def archive_option(func: Callable) -> Callable:
    return click.option(
        "--archive", "archive_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Archive directory [default: $SOUNDTRACE_ARCHIVE or ./soundtrace-archive].",
    )(func)


def open_archive(archive_dir: Path | None, encoder_config: EncoderConfig | None = None, **kwargs):
    """The archive; the model is loaded now only when ``--model`` names one (else on first use,
    which an audit of remembered words never reaches)."""
    from .archive import Archive

    directory = archive_dir or default_archive_dir()
    encoder = None
    if encoder_config is not None and encoder_config.model:
        from .encoder import load_encoder

        encoder = load_encoder(encoder_config)
    return Archive.open(directory, encoder=encoder, encoder_config=encoder_config, **kwargs)
