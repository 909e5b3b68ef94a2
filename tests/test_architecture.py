"""The layout is the architecture: packages per stage, arrows one way, no cycles, small modules.

cli / app -> api -> engine jobs (indexing, search, audit, classify) -> session -> archive, audio,
model, and the shared kernel (config, errors, embedding) under everything. The import graph is
read from the source (every import, function-level ones included), so a shortcut that would only
show at run time is caught too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "indexer"

KERNEL = {"indexer.config", "indexer.errors", "indexer.embedding"}
LAYERS = {
    # a module's layer -> the layers it may import (besides itself and the kernel)
    "archive": set(),
    "audio": set(),
    "model": set(),
    "session": {"archive", "model"},
    "indexing": {"session", "archive", "audio"},
    "search": {"session", "archive", "audio", "indexing"},
    "audit": {"session", "archive", "audio", "search", "model"},
    "classify": {"audio", "indexing", "audit", "model"},
    "api": {"session", "archive", "indexing", "search", "audit"},
    "cli": {"api", "session", "archive", "audio", "model", "indexing", "search", "audit", "classify"},
}
THIRD_PARTY_ONLY_IN = {"torch": {"model"}, "transformers": {"model"}, "click": {"cli"}, "rich": {"cli"}, "streamlit": set()}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if module in KERNEL or module == "indexer":
        return None
    return parts[1]


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (TYPE_CHECKING blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.relative_to(ROOT)} uses a relative import; write it in full"
            base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_arrows_run_one_way():
    wrong = []
    for module, targets in _graph().items():
        layer = _layer(module)
        for target in targets:
            other = _layer(target)
            if target in KERNEL or other is None or other == layer:
                continue
            if layer is None or other not in LAYERS[layer]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the arrows:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles_not_even_through_function_level_imports():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_heavy_and_ui_libraries_stay_in_their_packages():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        for imported in _imports(path):
            root = imported.split(".")[0]
            if root in THIRD_PARTY_ONLY_IN and _layer(module) not in THIRD_PARTY_ONLY_IN[root]:
                wrong.append(f"{module} imports {root}")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize(
    ("imported", "absent"),
    [
        ("indexer.archive.storage", ["torch", "transformers", "indexer.model", "indexer.session", "indexer.search",
                                     "indexer.audit", "indexer.indexing", "click", "streamlit"]),
        ("indexer.audio.decode", ["torch", "indexer.archive", "indexer.model", "duckdb"]),
        ("indexer.api", ["torch", "transformers", "click", "rich", "streamlit"]),
        ("indexer.cli.main", ["torch", "transformers", "streamlit"]),
        ("indexer", ["torch", "duckdb", "faiss"]),
    ],
)
def test_what_an_import_pulls_in_at_run_time(imported, absent):
    code = (
        f"import sys, importlib; importlib.import_module({imported!r});"
        f"print(sorted(m for m in sys.modules if any(m == a or m.startswith(a + '.') for a in {absent!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]", f"{imported} pulls in {result.stdout.strip()}"


def test_every_module_is_small():
    long = []
    for path in sorted(list(PACKAGE.rglob("*.py")) + list((ROOT / "search_app").rglob("*.py"))):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, "\n".join(long)


def test_the_readme_module_table_names_every_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| module | job |"):]
    table = table[: table.index("\n\n")]
    missing = [
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and not re.search(rf"(?<![\w]){path.stem}\.py", table)
    ]
    assert not missing, f"modules the README's table does not name: {missing}"
