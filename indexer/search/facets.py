"""Point-and-click filters: the choices a UI offers for an archive, and the picks they become.

A person picking "site: leeds, porto" and a date range gets ``filtering.Picks``: column
names matched against the archive's own columns (a whitelist), values kept as data and bound as
parameters when the filter runs, so nothing they pick is ever written into SQL text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from indexer.archive.catalog import Catalog
from indexer.archive.metadata import RECORDING_VIEW
from indexer.archive.sql import quote_identifier
from indexer.search.filtering import Picks, as_date, known_column, yes_no_column

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


def picks_from_choices(
    columns: Mapping[str, str],
    choices: Mapping[str, Sequence[str]] | None = None,
    dates: Mapping[str, tuple[date | str | None, date | str | None]] | None = None,
    exclude_true: Sequence[str] = (),
) -> Picks:
    """The app's picks, checked: known columns only, real dates, yes/no columns to exclude on.

    ``choices``: column -> values to keep (empty keeps all); ``dates``: column -> (first, last)
    day, either end open; ``exclude_true``: boolean columns (``is_silent``) whose true rows go.
    An empty ``Picks`` (false) narrows nothing.
    """
    kept = tuple(
        (known_column(columns, column), tuple(str(v) for v in values)) for column, values in (choices or {}).items() if values
    )
    ranges = tuple(
        (known_column(columns, column), as_date(first) if first is not None else None, as_date(last) if last is not None else None)
        for column, (first, last) in (dates or {}).items()
        if first is not None or last is not None
    )
    return Picks(kept, ranges, tuple(yes_no_column(columns, column) for column in exclude_true))
