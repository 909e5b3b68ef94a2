"""The default-deny walk over DuckDB's parse tree of a ``--where`` expression."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from indexer.errors import FilterError
from indexer.search.where_allowlist import (
    AGGREGATES,
    ALLOWED_FUNCTIONS,
    CAST_TYPES,
    COLLATIONS,
    COMMON_KEYS,
    COMPARISONS,
    CONJUNCTIONS,
    HANDLED,
    NAMED_CLASSES,
    OPERATORS,
    VALUE_KEYWORDS,
)
from indexer.search.where_regex import REGEX_FUNCTIONS, check_patterns_size, pattern_size, pattern_text

MAX_DEPTH = 64
"""Nesting limit, so a hostile expression cannot exhaust Python's recursion stack."""

MAX_REPLACEMENT = 32
"""``replace(text, from, to)`` is the one allowed function whose output can be many times longer
than its input, so ``to`` must be a short constant and no ``replace`` may sit inside another:
nine nested calls in 258 characters took 127 s and 13 GB, and DuckDB's memory limit does not
bound the text an expression builds."""


class TreeWalker:
    """Default-deny walk of a DuckDB expression tree, one handler per allowed node class."""

    def __init__(self, columns: Mapping[str, str]) -> None:
        self.columns = list(columns)
        self.lookup = {name.lower() for name in columns}
        self._in_replace = False
        self.pattern_size = 0
        """All regular expressions of the filter, written out (``where_regex``)."""

    def visit(self, node: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise FilterError(f"--where is nested more than {MAX_DEPTH} levels deep")
        if not isinstance(node, dict):
            raise FilterError("--where contains an expression that is not supported")
        cls = node.get("class")
        if cls in NAMED_CLASSES:
            raise FilterError(NAMED_CLASSES[cls])
        handler = getattr(self, f"_visit_{str(cls).lower()}", None)
        if handler is None or cls not in HANDLED:
            kind = str(cls).lower().replace("_", " ")
            raise FilterError(f"Expressions of kind '{kind}' are not allowed in --where")
        if node.get("alias"):
            raise FilterError("Aliases (AS name) are not allowed in --where")
        _expect_keys(node, HANDLED[cls])
        handler(node, depth + 1)

    def _visit_constant(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, {"VALUE_CONSTANT"})

    def _visit_column_ref(self, node: dict[str, Any], depth: int) -> None:
        names = node.get("column_names") or []
        if len(names) != 1 or not isinstance(names[0], str):
            dotted = ".".join(map(str, names))
            if len(names) == 2 and str(names[0]).lower() == "meta" and str(names[1]).lower() in self.lookup:
                raise FilterError(f"--where names metadata columns without the 'meta.' outputs put before them: "
                                  f"write '{names[1]}', not '{dotted}'")
            raise FilterError(f"Use a plain column name instead of '{dotted}' in --where")
        name = names[0]
        if name.lower() in self.lookup or name.lower() in VALUE_KEYWORDS:
            return
        raise FilterError(self._unknown_column(name))

    def _unknown_column(self, name: str) -> str:
        known = ", ".join(self.columns) if self.columns else "none"
        close = difflib.get_close_matches(name.lower(), sorted(self.lookup), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"Unknown column '{name}' in --where{hint}; known columns: {known}"

    def _visit_comparison(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, COMPARISONS)
        self.visit(node.get("left"), depth)
        self.visit(node.get("right"), depth)

    def _visit_conjunction(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, CONJUNCTIONS)
        self._visit_all(node.get("children"), depth)

    def _visit_operator(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, OPERATORS)
        self._visit_all(node.get("children"), depth)

    def _visit_between(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, {"COMPARE_BETWEEN"})
        for key in ("input", "lower", "upper"):
            self.visit(node.get(key), depth)

    def _visit_cast(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, {"OPERATOR_CAST"})
        if not isinstance(node.get("try_cast"), bool):
            raise FilterError("--where contains a cast that is not supported")
        self.visit(node.get("child"), depth)
        self._visit_type(node.get("type_expr"), depth)

    def _visit_type(self, node: Any, depth: int) -> None:
        """Cast targets: built-in scalar types (and lists of them), constant modifiers only."""
        if depth > MAX_DEPTH:
            raise FilterError(f"--where is nested more than {MAX_DEPTH} levels deep")
        if not isinstance(node, dict) or node.get("class") != "TYPE" or node.get("alias"):
            raise FilterError("--where contains a cast that is not supported")
        _expect_keys(node, {"type_name", "schema", "catalog", "children", "qualified_name"})
        name = str(node.get("type_name", ""))
        path = (node.get("qualified_name") or {}).get("path")
        if node.get("schema") or node.get("catalog") or path != [name]:
            raise FilterError(f"Casting to '{'.'.join(map(str, path or []))}' is not allowed in --where")
        if name.lower() not in CAST_TYPES:
            raise FilterError(f"Casting to type '{name}' is not allowed in --where")
        for child in node.get("children") or []:
            if isinstance(child, dict) and child.get("class") == "TYPE":
                self._visit_type(child, depth + 1)
            elif isinstance(child, dict) and child.get("class") == "CONSTANT":
                self.visit(child, depth + 1)
            else:
                raise FilterError("--where contains a cast that is not supported")

    def _visit_case(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, {"CASE_EXPR"})
        checks = node.get("case_checks")
        if not isinstance(checks, list) or not checks:
            raise FilterError("--where contains a CASE expression that is not supported")
        for check in checks:
            if not isinstance(check, dict) or not {"when_expr", "then_expr"} <= set(check):
                raise FilterError("--where contains a CASE expression that is not supported")
            _expect_keys(check, {"when_expr", "then_expr"})
            self.visit(check["when_expr"], depth)
            self.visit(check["then_expr"], depth)
        self.visit(node.get("else_expr"), depth)

    def _visit_collate(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, {"COLLATE"})
        collation = str(node.get("collation", ""))
        if not collation or any(part.lower() not in COLLATIONS for part in collation.split(".")):
            raise FilterError(f"Collation '{collation}' is not allowed in --where")
        self.visit(node.get("child"), depth)

    def _visit_function(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, {"FUNCTION"})
        name = str(node.get("function_name", ""))
        path = (node.get("qualified_name") or {}).get("path")
        if node.get("schema") or node.get("catalog") or path != [name]:
            dotted = ".".join(map(str, path or [name]))
            raise FilterError(f"Function '{dotted}' is not allowed in --where; call functions by their plain name")
        key = name.lower()
        shown = "count" if key == "count_star" else name
        if key in AGGREGATES:
            raise FilterError(f"Aggregate function '{shown}' is not allowed in --where")
        if key not in ALLOWED_FUNCTIONS:
            raise FilterError(f"Function '{shown}' is not allowed in --where")
        if node.get("filter") is not None:
            raise FilterError(f"FILTER clauses on '{shown}' are not allowed in --where")
        if (node.get("order_bys") or {}).get("orders"):
            raise FilterError(f"ORDER BY inside '{shown}' is not allowed in --where")
        if node.get("distinct") or node.get("export_state"):
            raise FilterError(f"DISTINCT or EXPORT_STATE on '{shown}' is not allowed in --where")
        arguments = node.get("arguments")
        if not isinstance(arguments, list):
            raise FilterError(f"Function '{shown}' is called in a way that is not supported")
        for argument in arguments:
            if not isinstance(argument, dict) or not {"name", "expression"} <= set(argument):
                raise FilterError(f"Function '{shown}' is called in a way that is not supported")
            _expect_keys(argument, {"name", "expression"})
            if argument["name"]:
                raise FilterError(f"Named arguments to '{shown}' are not allowed in --where")
        if key == "replace":
            self._visit_replace([a["expression"] for a in arguments], depth)
            return
        if key in REGEX_FUNCTIONS and len(arguments) >= 2:
            self.pattern_size += pattern_size(pattern_text(shown, arguments[1]["expression"]))
            check_patterns_size(self.pattern_size)
        for argument in arguments:
            self.visit(argument["expression"], depth)

    def _visit_replace(self, arguments: list[Any], depth: int) -> None:
        """See ``MAX_REPLACEMENT``: text may shrink or grow a little, never multiply."""
        if self._in_replace:
            raise FilterError("replace() inside another replace() is not allowed in --where (it can grow text without bound)")
        replacement = arguments[2] if len(arguments) == 3 else None
        literal = replacement.get("literal") if isinstance(replacement, dict) and replacement.get("class") == "CONSTANT" else None
        text = literal.get("text") if isinstance(literal, dict) and literal.get("kind") == "STRING" else None
        if not isinstance(text, str) or len(text) > MAX_REPLACEMENT:
            raise FilterError(
                f"replace() in --where takes a text constant of at most {MAX_REPLACEMENT} characters as its replacement"
            )
        self._in_replace = True
        try:
            for argument in arguments:
                self.visit(argument, depth)
        finally:
            self._in_replace = False

    def _visit_all(self, children: Any, depth: int) -> None:
        if not isinstance(children, list) or not children:
            raise FilterError("--where contains an expression that is not supported")
        for child in children:
            self.visit(child, depth)


def _expect_keys(node: dict[str, Any], allowed: frozenset[str] | set[str]) -> None:
    """Refuse keys this module does not know, unless they are flags (see the module docstring)."""
    for key in set(node) - COMMON_KEYS - set(allowed):
        if not _is_flag(node[key]):
            raise FilterError("--where contains an expression that is not supported")


def _is_flag(value: Any) -> bool:
    """A scalar that can only switch behaviour: no sub-expression, no name of anything."""
    if value is None or isinstance(value, (bool, int, float)):
        return True
    return value == ""


def _expect_type(node: dict[str, Any], allowed: frozenset[str] | set[str]) -> None:
    if node.get("type") not in allowed:
        kind = str(node.get("type", "")).lower().replace("_", " ")
        raise FilterError(f"Expressions of kind '{kind}' are not allowed in --where")
