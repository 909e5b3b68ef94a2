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

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import duckdb

from indexer.archive.sql import quote_identifier
from indexer.errors import FilterError
from indexer.search.where_walker import MAX_DEPTH, TreeWalker

MAX_LENGTH = 4000
"""Longer than any filter a person types; keeps parsing and error messages small."""

_PROBE = "SELECT 1 FROM t WHERE "

_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]*(\([0-9, ]*\))?(\[\])?$")
"""Column types the binding check recreates: DuckDB's own scalar type names, nothing else."""

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
    type name; names match case-insensitively, as in DuckDB. Answers are remembered: the check
    costs a sandbox database (≈ 25 ms), and the app and a search loop ask the same again.
    """
    if not isinstance(expr, str):
        raise FilterError("--where must be text")
    return _validated(expr, tuple(columns.items()))


@lru_cache(maxsize=256)
def _validated(expr: str, column_items: tuple[tuple[str, str], ...]) -> str:
    columns = dict(column_items)
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
        _parse_where(con, text, TreeWalker(columns))
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


def _parse_where(con: duckdb.DuckDBPyConnection, text: str, walker: TreeWalker) -> None:
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
    try:  # one statement binds it (compiling its patterns once) and evaluates its constant parts
        cursor = con.execute(f"SELECT ({text}) AS v FROM t")
        cursor.fetchall()
        described = [(d[0], str(d[1])) for d in cursor.description]
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
