"""Which recordings a search or an audit may look at: ``--where``, dates and the app's picks.

Filters always select recordings: they run against ``recordings_view`` alone (so a recording's
``peak`` is never confused with a window's), and only then are the matching recordings' windows
taken. Nothing from data is written into SQL text: the user's ``--where`` is the one expression
``where.validate_where`` has parsed and allowlisted, column names pass through
``sql.quote_identifier`` after being matched against the view's own columns, and every value
(dates, the app's picked choices) is a bound parameter.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Iterator, Mapping, Sequence

import duckdb
import numpy as np

from indexer.archive.catalog import Catalog
from indexer.archive.metadata import RECORDING_VIEW
from indexer.archive.sql import quote_identifier
from indexer.errors import FilterError
from indexer.search.where import validate_where

FILTER_MEMORY_LIMIT = "1GB"
"""DuckDB memory a filter query's joins and sorts may use. It does not bound the text an
expression builds; that is ``where_walker.MAX_REPLACEMENT``'s job."""

FILTER_TIME_LIMIT_S = 30.0
"""A filter query is interrupted after this long (≈ 0.2 s is usual at 10M windows). DuckDB
notices an interrupt between chunks of 2,048 rows, so the bounds on what one row may cost
(``where_regex``, ``MAX_REPLACEMENT``) are what keep the stop prompt."""


@dataclass(frozen=True)
class Picks:
    """Choices made with the app's widgets: data, bound as parameters, never spliced into SQL.

    ``choices``: (column, values to keep); ``dates``: (column, first day, last day), either end
    open; ``exclude_true``: yes/no columns (``is_silent``) whose true rows go.
    """

    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()
    dates: tuple[tuple[str, date | None, date | None], ...] = ()
    exclude_true: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        """True when the picks narrow anything (a column with no values picked narrows nothing)."""
        return any(v for _, v in self.choices) or any(f or l for _, f, l in self.dates) or bool(self.exclude_true)

    def describe(self) -> str:
        """What a person reads under the results: ``site: leeds, york · date 2024-01-02 – …``."""
        parts = [f"{column}: {', '.join(values)}" for column, values in self.choices if values]
        parts += [f"{column} {_day(first)} – {_day(last)}" for column, first, last in self.dates if first or last]
        parts += [f"not {column}" for column in self.exclude_true]
        return " · ".join(parts)

    def to_json(self) -> dict:
        return {
            "choices": [[c, list(v)] for c, v in self.choices],
            "dates": [[c, _iso(f), _iso(l)] for c, f, l in self.dates],
            "exclude_true": list(self.exclude_true),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "Picks":
        data = data or {}
        return cls(
            choices=tuple((str(c), tuple(str(v) for v in values)) for c, values in data.get("choices", [])),
            dates=tuple(
                (str(c), as_date(f) if f else None, as_date(l) if l else None) for c, f, l in data.get("dates", [])
            ),
            exclude_true=tuple(str(c) for c in data.get("exclude_true", [])),
        )


@dataclass(frozen=True)
class SearchFilters:
    where: str | None = None
    since: date | str | None = None
    until: date | str | None = None
    date_column: str | None = None
    picks: Picks = Picks()

    def __bool__(self) -> bool:
        return bool(self.where or self.since is not None or self.until is not None or self.picks)

    def describe(self) -> str:
        """What a person reads: ``where site = 'leeds' · since 2024-05-01``; empty when nothing narrows."""
        parts = [f"where {self.where}"] if self.where else []
        parts += [f"{word} {_iso(bound)}" for word, bound in (("since", self.since), ("until", self.until)) if bound is not None]
        if (self.since is not None or self.until is not None) and self.date_column:
            parts.append(f"dated by {self.date_column}")
        return " · ".join(parts + ([self.picks.describe()] if self.picks else []))

    def to_json(self) -> dict:
        return {
            "where": self.where, "since": _iso(self.since), "until": _iso(self.until),
            "date_column": self.date_column, "picks": self.picks.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SearchFilters":
        return cls(
            where=data.get("where"), since=data.get("since"), until=data.get("until"),
            date_column=data.get("date_column"), picks=Picks.from_json(data.get("picks")),
        )


@dataclass(frozen=True)
class RecordingFilter:
    """A WHERE clause over ``recordings_view`` and its parameters."""

    sql: str
    params: tuple[Any, ...]


def recording_filter(catalog: Catalog, filters: SearchFilters) -> RecordingFilter | None:
    """The compiled filter, or None when nothing narrows the archive."""
    if not filters:
        return None
    columns = catalog.filter_columns()
    clauses: list[str] = []
    params: list[Any] = []
    if filters.where:
        clauses.append(f"({validate_where(filters.where, columns)})")
    if filters.since is not None or filters.until is not None:
        column = quote_identifier(date_column(columns, catalog.metadata_columns(), filters.date_column))
        for bound, op in ((filters.since, ">="), (filters.until, "<=")):
            if bound is not None:
                clauses.append(f"CAST({column} AS DATE) {op} ?")
                params.append(as_date(bound))
    _compile_picks(filters.picks, columns, clauses, params)
    return RecordingFilter(" AND ".join(clauses), tuple(params)) if clauses else None


def filtered_window_ids_sql(where: RecordingFilter) -> str:
    """Window ids of the recordings matching ``where``, in id order (the filter sees recordings only)."""
    return (
        f"SELECT w.id FROM windows w WHERE w.recording_id IN (SELECT id FROM {RECORDING_VIEW} WHERE {where.sql})"
        " ORDER BY w.id"
    )


def filtered_window_ids(catalog: Catalog, where: RecordingFilter) -> np.ndarray:
    """``filtered_window_ids_sql``'s answer, under ``FILTER_MEMORY_LIMIT`` and ``FILTER_TIME_LIMIT_S``
    (search, the app and audits all filter here); FilterError when either is met."""
    con = catalog.con
    try:
        with catalog.memory_limit(FILTER_MEMORY_LIMIT), _time_limit(con, FILTER_TIME_LIMIT_S):
            result = con.execute(filtered_window_ids_sql(where), list(where.params)).fetchnumpy()
    except duckdb.Error as exc:  # a type error the validator cannot see (e.g. comparing text to a number)
        raise FilterError(f"The filter cannot be applied: {str(exc).splitlines()[0]}") from None
    return result["id"].astype(np.int64)


class _TimedOut(Exception):
    pass


@contextmanager
def _time_limit(con: duckdb.DuckDBPyConnection, seconds: float) -> Iterator[None]:
    """Interrupt ``con`` (from a timer thread) if the block runs past ``seconds``. The timer can
    only interrupt while the block runs: an interrupt landing on an idle connection is ignored."""
    lock = threading.Lock()
    state = {"running": True, "fired": False}

    def stop() -> None:
        with lock:
            if state["running"]:
                state["fired"] = True
                con.interrupt()

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()
    try:
        yield
    except duckdb.InterruptException:
        if not state["fired"]:
            raise  # Ctrl-C, not the limit
        raise FilterError(
            f"The filter ran longer than {seconds:g} s and was stopped; narrow it (fewer or simpler patterns "
            "and functions) and try again"
        ) from None
    finally:
        with lock:
            state["running"] = False
        timer.cancel()


def _compile_picks(picks: Picks, columns: Mapping[str, str], clauses: list[str], params: list[Any]) -> None:
    for column, values in picks.choices:
        if values:
            clauses.append(f"CAST({quote_identifier(known_column(columns, column))} AS VARCHAR) IN ({', '.join('?' * len(values))})")
            params.extend(str(v) for v in values)
    for column, first, last in picks.dates:
        name = quote_identifier(known_column(columns, column))
        for bound, op in ((first, ">="), (last, "<=")):
            if bound is not None:
                clauses.append(f"CAST({name} AS DATE) {op} ?")
                params.append(as_date(bound))
    for column in picks.exclude_true:
        clauses.append(f"NOT coalesce({quote_identifier(yes_no_column(columns, column))}, false)")


def known_column(columns: Mapping[str, str], wanted: str, what: str = "column") -> str:
    """The view's own spelling of ``wanted`` (case-insensitively); anything else is refused."""
    match = {c.lower(): c for c in columns}.get(str(wanted).lower())
    if match is None:
        raise FilterError(f"Unknown {what} '{wanted}'; known columns: {', '.join(sorted(columns))}.")
    return match


def yes_no_column(columns: Mapping[str, str], wanted: str) -> str:
    name = known_column(columns, wanted)
    if columns[name].upper() != "BOOLEAN":
        raise FilterError(f"Column '{wanted}' is not a yes/no column, so it cannot be excluded on.")
    return name


def date_column(columns: dict[str, str], metadata_columns: Sequence[str], wanted: str | None = None) -> str:
    """The column --since/--until compare: as asked, else metadata 'date', else the first dated one."""
    if wanted:
        return known_column(columns, wanted, "date column")
    for name in metadata_columns:
        if name.lower() == "date":
            return name
    for name in metadata_columns:
        if columns.get(name, "").upper().startswith(("DATE", "TIMESTAMP")):
            return name
    return "modified_at"


def as_date(value: date | str) -> date:
    """A date from a date, a datetime or 'YYYY-MM-DD'; FilterError otherwise."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise FilterError(f"'{value}' is not a date; use YYYY-MM-DD.") from None


def _iso(value: date | str | None) -> str | None:
    return None if value is None else as_date(value).isoformat()


def _day(value: date | str | None) -> str:
    return _iso(value) or "…"
