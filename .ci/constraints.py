"""Write or compare ``constraints.txt``: the exact versions the test suite passed with.

Run with a virtual environment's own interpreter (stdlib only):

    .venv/bin/python .ci/constraints.py write    # pin what this environment has
    .venv-newest/bin/python .ci/constraints.py drift   # what newer releases CI just tested

Like Apache Airflow's constraint files, the file pins every distribution the suite ran with
(the ``dev`` extra, which holds the ``app`` extra), so ``pip install -c constraints.txt`` gives a
new user the tested set. torch is left out on purpose: the install commands put 2.13.0 (CPU) in
first, and a GPU user's own CUDA build must not be replaced by it.
"""

from __future__ import annotations

import platform
import sys
from importlib.metadata import distributions
from pathlib import Path

CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"
UNPINNED = {"soundtrace", "torch", "pip", "setuptools", "wheel", "triton"}
"""The project itself, torch (see above) and the installer's own tools."""


def installed() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name and name not in UNPINNED and not name.startswith("nvidia-"):
            found[name] = dist.version
    return dict(sorted(found.items()))


def pinned() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[name.strip().lower()] = version.strip()
    return found


def write() -> None:
    header = [
        "# The exact versions soundtrace's test suite passed with (see .ci/constraints.py).",
        f"# Recorded on Python {platform.python_version()}, {platform.system()} {platform.machine()}.",
        "# Use: pip install torch==2.13.0 && pip install -c constraints.txt -e '.[app]'",
        "# torch is not pinned here: install the build for your machine first.",
    ]
    lines = [f"{name}=={version}" for name, version in installed().items()]
    CONSTRAINTS.write_text("\n".join(header + lines) + "\n")
    print(f"wrote {len(lines)} pins to {CONSTRAINTS.name}")


def drift() -> None:
    tested, now = pinned(), installed()
    changed = [(name, tested.get(name, "-"), version) for name, version in now.items() if tested.get(name) != version]
    if not changed:
        print("newest releases: the same versions as constraints.txt")
        return
    print(f"newest releases: {len(changed)} differ from constraints.txt")
    for name, old, new in changed:
        print(f"  {name:<32} {old:>14} -> {new}")


if __name__ == "__main__":
    commands = {"write": write, "drift": drift}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} write|drift")
    commands[sys.argv[1]]()
