"""Check a user's ``--where`` expression before the engine embeds it in SQL.

The engine runs ``SELECT ... FROM recordings_view WHERE (<expr>)``; a filter must only ever
narrow that SELECT. Rather than pattern-match SQL text, we let DuckDB's own parser build the
syntax tree (``json_serialize_sql``) and walk it with an allowlist: node classes, node types,
functions, cast targets and collations this module does not name are refused, so a new DuckDB
feature fails closed instead of open.

Why DuckDB's parser and not a second one such as sqlglot: the parser that checks is then the
parser that runs. With a separate parser, every difference between its reading of ``$$...$$``,
``E'...'``, ``::``, ``~``, ``SIMILAR TO`` or ``COLLATE`` and DuckDB's is either a hole (text one
parser thinks is a string and the other runs) or a filter that silently selects other rows once
regenerated, and sqlglot's own tree changes between its minor releases as well.

What a DuckDB release may change is the serialized tree's *bookkeeping*: 2.0.1 added the flag
``is_legacy_function_call`` to every FUNCTION node. So an unknown key is tolerated when its value
is a flag (a boolean, a number, null or an empty string), which cannot hold a sub-expression nor
name a schema, catalog, function or file; an unknown key holding an object, a list or a
non-empty string is refused, so every expression the query will evaluate is still one this
module has visited.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

import duckdb

from indexer.errors import FilterError
from indexer.sql import quote_identifier

MAX_LENGTH = 4000
"""Longer than any filter a person types; keeps parsing and error messages small."""

MAX_DEPTH = 64
"""Nesting limit, so a hostile expression cannot exhaust Python's recursion stack."""

MAX_REPLACEMENT = 32
"""``replace(text, from, to)`` is the one allowed function whose output can be many times longer
than its input, so ``to`` must be a short constant and no ``replace`` may sit inside another:
nine nested calls in 258 characters took 127 s and 13 GB, and DuckDB's memory limit does not
bound the text an expression builds."""

_PROBE = "SELECT 1 FROM t WHERE "

_COMPARISONS = frozenset(
    {
        "COMPARE_EQUAL",
        "COMPARE_NOTEQUAL",
        "COMPARE_LESSTHAN",
        "COMPARE_GREATERTHAN",
        "COMPARE_LESSTHANOREQUALTO",
        "COMPARE_GREATERTHANOREQUALTO",
        "COMPARE_DISTINCT_FROM",
        "COMPARE_NOT_DISTINCT_FROM",
    }
)

_CONJUNCTIONS = frozenset({"CONJUNCTION_AND", "CONJUNCTION_OR"})

_OPERATORS = frozenset(
    {
        "OPERATOR_NOT",
        "OPERATOR_IS_NULL",
        "OPERATOR_IS_NOT_NULL",
        "COMPARE_IN",
        "COMPARE_NOT_IN",
        "OPERATOR_COALESCE",
        "OPERATOR_NULLIF",
        "ARRAY_EXTRACT",
        "ARRAY_SLICE",
    }
)

# Operators DuckDB's parser turns into FUNCTION nodes (LIKE is ``~~``, GLOB ``~~~``, ...).
OPERATOR_FUNCTIONS = frozenset(
    {
        "+", "-", "*", "/", "//", "%", "**", "^", "||",
        "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~", "^@", "@>", "<@", "&&",
        "like_escape", "not_like_escape", "ilike_escape", "not_ilike_escape",
    }
)  # fmt: skip

# Pure scalar functions from DuckDB's core: no I/O, no session state, no side effects.
SCALAR_FUNCTIONS = frozenset(
    {
        # text
        "lower", "lcase", "upper", "ucase", "length", "len", "trim", "ltrim", "rtrim",
        "concat", "concat_ws", "substr", "substring", "left", "right", "replace",
        "contains", "starts_with", "prefix", "ends_with", "suffix", "position", "strpos",
        "instr", "regexp_matches", "regexp_full_match", "regexp_extract",
        # numbers
        "abs", "round", "floor", "ceil", "ceiling", "trunc", "sign", "greatest", "least",
        "isnan", "isinf", "isfinite",
        # dates and times (to_* come from INTERVAL literals such as INTERVAL 3 DAY)
        "date_part", "datepart", "year", "month", "day", "dayname", "monthname", "hour",
        "minute", "second", "week", "weekday", "dayofweek", "dayofyear", "quarter",
        "date_trunc", "datetrunc", "date_diff", "datediff", "strftime", "strptime", "epoch",
        "make_date", "today", "current_date", "now", "current_timestamp",
        "to_years", "to_months", "to_weeks", "to_days", "to_hours", "to_minutes",
        "to_seconds", "to_milliseconds", "to_microseconds",
        # conditionals and lists (list_value comes from [a, b] literals)
        "coalesce", "nullif", "if", "list_value", "list_contains", "list_has",
        "array_contains", "row",
    }
)  # fmt: skip

ALLOWED_FUNCTIONS = OPERATOR_FUNCTIONS | SCALAR_FUNCTIONS

_AGGREGATES = frozenset(
    {
        "count", "count_star", "sum", "avg", "mean", "min", "max", "first", "last",
        "any_value", "arg_min", "arg_max", "list", "array_agg", "string_agg", "group_concat",
        "median", "mode", "quantile", "stddev", "variance", "bool_and", "bool_or",
        "histogram", "approx_count_distinct",
    }
)  # fmt: skip

# SQL keywords DuckDB parses as column references and binds as functions when no column matches.
_VALUE_KEYWORDS = frozenset({"current_date", "current_timestamp", "current_time", "localtimestamp", "localtime"})

CAST_TYPES = frozenset(
    {
        "boolean", "bool", "logical", "tinyint", "int1", "smallint", "int2", "short",
        "integer", "int", "int4", "signed", "bigint", "int8", "long", "hugeint", "int128",
        "utinyint", "usmallint", "uinteger", "ubigint", "uhugeint", "float", "float4",
        "real", "double", "float8", "decimal", "numeric", "varchar", "text", "string",
        "char", "bpchar", "nvarchar", "date", "time", "timestamp", "datetime",
        "timestamptz", "timestamp with time zone", "timestamp_s", "timestamp_ms",
        "timestamp_ns", "interval", "uuid", "list",
    }
)  # fmt: skip

_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]*(\([0-9, ]*\))?(\[\])?$")
"""Column types the binding check recreates: DuckDB's own scalar type names, nothing else."""

_COLLATIONS = frozenset({"nocase", "noaccent", "nfc"})

_COMMON_KEYS = frozenset({"class", "type", "alias", "query_location", "query_location_length"})

_NAMED_CLASSES = {
    "SUBQUERY": "Subqueries are not allowed in --where",
    "WINDOW": "Window functions are not allowed in --where",
    "STAR": "* and COLUMNS(...) are not allowed in --where",
    "PARAMETER": "Query parameters such as ? or $1 are not allowed in --where",
    "LAMBDA": "Lambda functions are not allowed in --where",
    "POSITIONAL_REFERENCE": "Positional references such as #1 are not allowed in --where",
}

_SANDBOX_CONFIG = {
    "memory_limit": "256MB",
    "threads": 1,
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "lock_configuration": True,
}


def validate_where(expr: str, columns: Mapping[str, str]) -> str:
    """Return ``expr`` trimmed if it is a plain boolean filter over ``columns``, else raise.

    ``columns`` maps each column name of the view the filter will run against to its DuckDB
    type name; names match case-insensitively, as in DuckDB.
    """
    if not isinstance(expr, str):
        raise FilterError("--where must be text")
    text = expr.strip()
    if not text:
        raise FilterError("--where is empty; give a condition such as \"agent = 'A17'\"")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"--where is longer than {MAX_LENGTH} characters")
    if any(ord(ch) < 32 and ch not in "\t\n\r" or ord(ch) == 127 for ch in text):
        raise FilterError("--where contains a control character")
    _check_tokens(text)
    con = duckdb.connect(":memory:", config=_SANDBOX_CONFIG)
    try:
        _parse_where(con, text, _Walker(columns))
        _check_binding(con, text, columns)
    except RecursionError:  # a parse tree too deep for json or Python, whatever the nesting limit saw
        raise FilterError(f"--where is nested more than {MAX_DEPTH} levels deep") from None
    finally:
        con.close()
    return text


def _check_tokens(text: str) -> None:
    """Refuse comments and statement separators, which could swallow or end the outer query."""
    try:
        tokens = duckdb.tokenize(text)
    except Exception:  # noqa: BLE001 - the parser reports the same problem more clearly
        return
    bounds = [pos for pos, _ in tokens] + [len(text)]
    for i, (pos, kind) in enumerate(tokens):
        if kind == duckdb.token_type.comment:
            raise FilterError("Comments (-- or /* */) are not allowed in --where")
        if kind == duckdb.token_type.operator and ";" in text[pos : bounds[i + 1]]:
            raise FilterError("--where must be a single boolean expression")


def _serialize(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    return json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])


def _strip_locations(node: Any) -> Any:
    """Drop source positions so trees parsed from differently wrapped text compare equal."""
    if isinstance(node, dict):
        return {
            k: _strip_locations(v)
            for k, v in node.items()
            if k not in ("query_location", "query_location_length")
        }
    if isinstance(node, list):
        return [_strip_locations(v) for v in node]
    return node


def _parse_where(con: duckdb.DuckDBPyConnection, text: str, walker: _Walker) -> None:
    """Parse ``text`` as a WHERE clause, allowlist its tree and prove it only fills that clause."""
    parsed = _serialize(con, _PROBE + text)
    if parsed.get("error"):
        message = str(parsed.get("error_message", ""))
        if parsed.get("error_type") == "parser":
            raise FilterError(f"--where is not a valid expression: {_one_line(message)}")
        raise FilterError("--where must be a single boolean expression")
    statements = parsed.get("statements") or []
    if len(statements) != 1:
        raise FilterError("--where must be a single boolean expression")
    node = statements[0].get("node") or {}
    where = node.get("where_clause")
    if where is None:
        raise FilterError("--where must be a single boolean expression")
    walker.visit(where, 0)

    baseline = _serialize(con, _PROBE + "TRUE")["statements"][0]
    shell = dict(statements[0], node={k: v for k, v in node.items() if k != "where_clause"})
    base_node = baseline["node"]
    base_shell = dict(baseline, node={k: v for k, v in base_node.items() if k != "where_clause"})
    if _strip_locations(shell) != _strip_locations(base_shell):
        raise FilterError("--where must be a single boolean expression, not a query clause")

    wrapped = _serialize(con, f"{_PROBE}({text})")
    if wrapped.get("error") or _strip_locations(wrapped.get("statements")) != _strip_locations(
        statements
    ):
        raise FilterError("--where must be a single boolean expression")


class _Walker:
    """Default-deny walk of a DuckDB expression tree, one handler per allowed node class."""

    def __init__(self, columns: Mapping[str, str]) -> None:
        self.columns = list(columns)
        self.lookup = {name.lower() for name in columns}
        self._in_replace = False

    def visit(self, node: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise FilterError(f"--where is nested more than {MAX_DEPTH} levels deep")
        if not isinstance(node, dict):
            raise FilterError("--where contains an expression that is not supported")
        cls = node.get("class")
        if cls in _NAMED_CLASSES:
            raise FilterError(_NAMED_CLASSES[cls])
        handler = getattr(self, f"_visit_{str(cls).lower()}", None)
        if handler is None or cls not in _HANDLED:
            kind = str(cls).lower().replace("_", " ")
            raise FilterError(f"Expressions of kind '{kind}' are not allowed in --where")
        if node.get("alias"):
            raise FilterError("Aliases (AS name) are not allowed in --where")
        _expect_keys(node, _HANDLED[cls])
        handler(node, depth + 1)

    def _visit_constant(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, {"VALUE_CONSTANT"})

    def _visit_column_ref(self, node: dict[str, Any], depth: int) -> None:
        names = node.get("column_names") or []
        if len(names) != 1 or not isinstance(names[0], str):
            dotted = ".".join(map(str, names))
            raise FilterError(f"Use a plain column name instead of '{dotted}' in --where")
        name = names[0]
        if name.lower() in self.lookup or name.lower() in _VALUE_KEYWORDS:
            return
        raise FilterError(self._unknown_column(name))

    def _unknown_column(self, name: str) -> str:
        known = ", ".join(self.columns) if self.columns else "none"
        close = difflib.get_close_matches(name.lower(), sorted(self.lookup), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"Unknown column '{name}' in --where{hint}; known columns: {known}"

    def _visit_comparison(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, _COMPARISONS)
        self.visit(node.get("left"), depth)
        self.visit(node.get("right"), depth)

    def _visit_conjunction(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, _CONJUNCTIONS)
        self._visit_all(node.get("children"), depth)

    def _visit_operator(self, node: dict[str, Any], depth: int) -> None:
        _expect_type(node, _OPERATORS)
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
        if not collation or any(part.lower() not in _COLLATIONS for part in collation.split(".")):
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
        if key in _AGGREGATES:
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


# Per class: the keys (beyond the common ones) a node may carry; any other key is refused.
_HANDLED: dict[str, frozenset[str]] = {
    "CONSTANT": frozenset({"literal"}),
    "COLUMN_REF": frozenset({"column_names"}),
    "COMPARISON": frozenset({"left", "right"}),
    "CONJUNCTION": frozenset({"children"}),
    "OPERATOR": frozenset({"children"}),
    "BETWEEN": frozenset({"input", "lower", "upper"}),
    "CAST": frozenset({"child", "try_cast", "type_expr"}),
    "CASE": frozenset({"case_checks", "else_expr"}),
    "COLLATE": frozenset({"child", "collation"}),
    "FUNCTION": frozenset(
        {
            "function_name", "schema", "catalog", "filter", "order_bys", "distinct",
            "is_operator", "export_state", "arguments", "qualified_name",
        }
    ),  # fmt: skip
}


def _expect_keys(node: dict[str, Any], allowed: frozenset[str] | set[str]) -> None:
    """Refuse keys this module does not know, unless they are flags (see the module docstring)."""
    for key in set(node) - _COMMON_KEYS - set(allowed):
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


def _check_binding(con: duckdb.DuckDBPyConnection, text: str, columns: Mapping[str, str]) -> None:
    """Bind the (already allowlisted) filter against an empty copy of the view's columns.

    This catches type mistakes, malformed literals and non-boolean filters with DuckDB's own
    rules; the one all-NULL row makes constant parts really evaluate. It runs in a
    throwaway in-memory database with external access off, so even a missed case is harmless.
    Column types the sandbox cannot recreate (user-defined types) skip this step.
    """
    if not columns or not all(_TYPE_NAME.match(type_name) for type_name in columns.values()):
        return
    column_sql = ", ".join(f"{quote_identifier(name)} {type_name}" for name, type_name in columns.items())
    try:
        con.execute(f"CREATE TABLE t ({column_sql})")
        con.execute("INSERT INTO t DEFAULT VALUES")
    except duckdb.Error:
        return
    try:
        described = con.execute(f"DESCRIBE SELECT ({text}) AS v FROM t").fetchall()
        con.execute(f"SELECT 1 FROM t WHERE ({text})").fetchall()
    except duckdb.Error as err:
        raise FilterError(f"--where cannot be applied to this archive: {_one_line(str(err))}") from None
    if len(described) != 1 or described[0][1] not in ("BOOLEAN", '"NULL"'):
        raise FilterError("--where must be a single boolean expression, such as \"duration_s > 60\"")


def _one_line(message: str) -> str:
    """First sentence of a DuckDB message, without its 'Binder Error:' style prefix."""
    line = message.strip().splitlines()[0] if message.strip() else "unknown problem"
    head, sep, rest = line.partition(" Error: ")
    if sep and len(head) < 30 and head.replace(" ", "").isalpha():
        line = rest
    line = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0]
    return line.rstrip(" .!")
