"""The layout is the architecture: packages per stage, arrows one way, no cycles, small modules.

cli / app -> api -> engine jobs (indexing, search, audit, classify, learning) -> session -> archive,
audio, model, and the shared kernel (config, errors, embedding, label_names) under everything. The import graph is
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
APP = ROOT / "search_app"

KERNEL = {"indexer.config", "indexer.errors", "indexer.embedding", "indexer.label_names"}
LAYERS = {
    # a module's layer -> the layers it imports (besides itself and the kernel); an arrow may skip
    # layers going down, never point up
    "archive": set(),
    "audio": set(),
    "model": set(),
    "session": {"archive", "model"},
    "indexing": {"session", "archive", "audio"},
    "search": {"session", "archive", "audio", "indexing"},
    "learning": {"session", "archive", "search"},
    "audit": {"session", "archive", "search", "model", "learning"},
    "classify": {"audio", "indexing", "search", "audit", "model"},
    "api": {"session", "indexing", "search", "audit", "learning"},
    "cli": {"api", "archive", "audio", "model", "indexing", "search", "audit", "classify", "learning",
            "app:search_app.launch"},
    "app": {"api", "session", "archive", "audio", "model", "indexing", "search", "audit", "classify", "learning"},
}
THIRD_PARTY_ONLY_IN = {"torch": {"model"}, "transformers": {"model"}, "click": {"cli"}, "rich": {"cli"}, "streamlit": {"app"}}
MAX_LINES = 400
_CODE_IN_STRINGS = re.compile(r"(?:from|import)\s+((?:indexer|search_app)(?:\.\w+)+)")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    if module.startswith("search_app"):
        return "app"
    if module in KERNEL or module == "indexer":
        return None
    return module.split(".")[1]


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in [*PACKAGE.rglob("*.py"), *APP.rglob("*.py")]}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (TYPE_CHECKING blocks included), and
    any module named in code handed over as a string (``python -c "from indexer... import ..."``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 or path.is_relative_to(APP), f"{path.relative_to(ROOT)} uses a relative import; write it in full"
            base = node.module or ""
            if node.level:  # the app's `from . import cached`
                base = ".".join(_module_name(path).split(".")[: -node.level] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.update(_CODE_IN_STRINGS.findall(node.value))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _sources()
    graph = {}
    for name, path in modules.items():
        targets = {m for m in _imports(path) if m in modules and m != name}
        parts = name.split(".")
        targets |= {".".join(parts[:i]) for i in range(2, len(parts))} & set(modules)  # a module's packages run first
        graph[name] = targets - {name}
    return graph


def test_arrows_run_one_way():
    wrong = []
    for module, targets in _graph().items():
        layer = _layer(module)
        for target in targets:
            other = _layer(target)
            if target in KERNEL or other is None or other == layer or target == ".".join(module.split(".")[:2]):
                continue
            allowed = LAYERS.get(layer, set()) if layer else set()
            if other not in allowed and f"{other}:{target}" not in allowed:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the arrows:\n" + "\n".join(sorted(wrong))


def test_nothing_inside_goes_through_the_front_door():
    """``indexer/__init__`` loads its names on first use for users; inside, imports name the module,
    so no arrow hides behind it (or behind a string handed to ``import_module``)."""
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "indexer" and module != "indexer":
                wrong.append(f"{module}: from indexer import ...")
            elif isinstance(node, ast.Import) and any(a.name == "indexer" for a in node.names):
                wrong.append(f"{module}: import indexer")
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"
            ) and module != "indexer":
                wrong.append(f"{module}: a string import")
    assert not wrong, "\n".join(sorted(wrong))


def test_package_inits_import_nothing():
    """A subpackage's __init__ runs whenever any of its modules is imported: it holds a docstring only."""
    busy = [
        str(path.relative_to(ROOT)) for path in PACKAGE.glob("*/__init__.py")
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))
    ]
    assert not busy, busy


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
    for module, path in _sources().items():
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
    for path in sorted([*PACKAGE.rglob("*.py"), *APP.rglob("*.py")]):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, "\n".join(long)


def test_the_readme_module_table_and_the_files_say_the_same_thing():
    """Each package row (bold) is followed by rows naming its modules; every module is named under
    its own package, and every name in the table is a file."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| module | job |"):]
    table = table[: table.index("\n\n")]
    named: set[str] = set()
    package = "indexer"
    for row in table.splitlines()[2:]:
        first = row.split("|")[1]
        folder = re.search(r"`((?:indexer|search_app)/[\w/]*?)/?`", first)
        if folder and first.strip().startswith("**"):
            package = folder.group(1).rstrip("/")
        cells = row.split("|")[1:3] if first.strip().startswith("**") else row.split("|")[1:2]
        for cell in cells:
            for entry in re.findall(r"`([\w/]+\.py)`", cell):
                named.add(entry if entry.startswith(("indexer/", "search_app/")) else f"{package}/{entry}")
    files = {
        str(p.relative_to(ROOT)) for p in [*PACKAGE.rglob("*.py"), *APP.rglob("*.py")]
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert not files - named, f"modules the table does not name under their package: {sorted(files - named)}"
    assert not named - files, f"names in the table with no such file: {sorted(named - files)}"
