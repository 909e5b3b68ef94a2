"""The ``streamlit run`` command line for the app, so the CLI and scripts start it the same safe way."""

from __future__ import annotations

import sys
from pathlib import Path

from indexer.config import EncoderConfig

MAIN = Path(__file__).resolve().with_name("main.py")


def command(
    archive: str | Path | None = None, port: int = 8501, host: str = "127.0.0.1", encoder: EncoderConfig | None = None
) -> list[str]:
    """argv for ``python -m streamlit run search_app/main.py``: localhost-only unless ``host`` says
    otherwise, headless, no usage statistics, no file watcher (nothing to reload in production) and no
    developer toolbar (no "Deploy" button for analysts). The archive and the model flags follow
    ``--``, where ``state`` reads them."""
    argv = [
        sys.executable, "-m", "streamlit", "run", str(MAIN),
        "--server.address", str(host),
        "--server.port", str(int(port)),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip
    app_args = []
    if archive is not None:
        app_args += ["--archive", str(Path(archive).expanduser().resolve())]
    if encoder is not None:
        app_args += [f"--{flag}={value}" for flag, value in _encoder_flags(encoder) if value not in (None, "")]
    return argv + (["--", *app_args] if app_args else [])


def _encoder_flags(encoder: EncoderConfig) -> list[tuple[str, object]]:
    return [
        ("model", encoder.model), ("device", encoder.device), ("cache-dir", encoder.cache_dir),
        ("batch-size", encoder.batch_size), ("threads", encoder.threads), ("precision", encoder.precision),
    ]
