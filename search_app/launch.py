"""The ``streamlit run`` command line for the app, so the CLI and scripts start it the same safe way."""

from __future__ import annotations

import sys
from pathlib import Path

MAIN = Path(__file__).resolve().with_name("main.py")


def command(archive: str | Path | None = None, port: int = 8501, host: str = "127.0.0.1") -> list[str]:
    """argv for ``python -m streamlit run search_app/main.py``: localhost-only unless ``host`` says
    otherwise, headless, no usage statistics, no file watcher (nothing to reload in production) and no
    developer toolbar (no "Deploy" button for analysts)."""
    argv = [
        sys.executable, "-m", "streamlit", "run", str(MAIN),
        "--server.address", str(host),
        "--server.port", str(int(port)),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip
    if archive is not None:
        argv += ["--", "--archive", str(Path(archive).expanduser().resolve())]
    return argv
