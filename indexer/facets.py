"""Point-and-click filters: the choices a UI offers for an archive, and the safe ``--where`` they become.

A person picking "site: leeds, porto" and a date range should get the same filtering as someone
typing ``--where``, without any of their text reaching SQL: column names come only from the
archive's own columns (a whitelist) and every value is written as a quoted literal, and the result
still goes through :func:`indexer.filters.validate_where` like any typed filter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from .catalog import RECORDING_VIEW, Catalog, quote_identifier
from .errors import FilterError
from .filters import validate_where
from .search import as_date

MAX_CHOICES = 50
"""A text column with more distinct values than this is not offered as a pick list."""


@dataclass(frozen=True)
class Facet:
    """One metadata column as a filter: a pick list of its values, or the range of its dates."""

    column: str
    kind: Literal["choice", "date"]
    choices: tuple[str, ...] = ()
    low: date | None = None
    high: date | None = None


def filter_facets(catalog: Catalog, max_choices: int = MAX_CHOICES) -> list[Facet]:
    """Facets for the metadata columns of indexed recordings: low-cardinality text and dates."""
    types = catalog.view_columns()
    facets = []
    for column in catalog.metadata_columns():
        kind = types.get(column, "").upper()
        col = quote_identifier(column)
        base = f"FROM {RECORDING_VIEW} WHERE status = 'indexed' AND {col} IS NOT NULL"
        if kind == "VARCHAR":
            count = catalog.one(f"SELECT count(DISTINCT {col}) {base}")[0]
            if 0 < count <= max_choices:
                values = catalog.con.execute(f"SELECT DISTINCT {col} {base} ORDER BY 1").fetchall()
                facets.append(Facet(column, "choice", choices=tuple(v for (v,) in values)))
        elif kind.startswith(("DATE", "TIMESTAMP")):
            low, high = catalog.one(f"SELECT min(CAST({col} AS DATE)), max(CAST({col} AS DATE)) {base}")
            if low is not None:
                facets.append(Facet(column, "date", low=low, high=high))
    return facets


def where_from_choices(
    columns: Mapping[str, str],
    choices: Mapping[str, Sequence[str]] | None = None,
    dates: Mapping[str, tuple[date | str | None, date | str | None]] | None = None,
    exclude_true: Sequence[str] = (),
) -> str | None:
    """A validated ``--where`` from picks, or None when nothing narrows the search.

    ``choices``: column -> values to keep (empty keeps all); ``dates``: column -> (first, last)
    day, either end open; ``exclude_true``: boolean columns (``is_silent``) whose true rows go.
    """
    clauses = []
    for column, values in (choices or {}).items():
        if values:
            literals = ", ".join(_text_literal(v) for v in values)
            clauses.append(f"{quote_identifier(_column(columns, column))} IN ({literals})")
    for column, (first, last) in (dates or {}).items():
        col = f"CAST({quote_identifier(_column(columns, column))} AS DATE)"
        if first is not None:
            clauses.append(f"{col} >= DATE '{as_date(first).isoformat()}'")
        if last is not None:
            clauses.append(f"{col} <= DATE '{as_date(last).isoformat()}'")
    for column in exclude_true:
        name = _column(columns, column)
        if columns[name].upper() != "BOOLEAN":
            raise FilterError(f"Column '{column}' is not a yes/no column, so it cannot be excluded on.")
        clauses.append(f"NOT coalesce({quote_identifier(name)}, false)")
    if not clauses:
        return None
    return validate_where(" AND ".join(clauses), columns)


def _column(columns: Mapping[str, str], wanted: str) -> str:
    """The whitelisted column named ``wanted`` (case-insensitively); anything else is refused."""
    match = {c.lower(): c for c in columns}.get(str(wanted).lower())
    if match is None:
        raise FilterError(f"Unknown column '{wanted}'; known columns: {', '.join(sorted(columns))}.")
    return match


def _text_literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"

