"""User metadata: a CSV merged into the catalog, and ``recordings_view``, recordings with their
metadata, the one surface filters run against. Headers become column names only after a check,
and reach SQL only through ``sql.quote_identifier``; values never reach SQL text at all."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import ContextManager, Protocol

import duckdb

from indexer.archive.sql import quote_identifier
from indexer.errors import MetadataError

RECORDING_VIEW = "recordings_view"
RECORDING_METADATA = "recording_metadata"
LINK_KEY = "_recording_id"
VIEW_COLUMNS = ("modified_at",)
"""Columns the view computes beside the recording's own; a metadata column of that name is renamed."""
INTERNAL_COLUMNS = frozenset(
    "id content_hash size_bytes mtime status error_kind error indexed_at decoder".split()
)
"""Bookkeeping columns of ``recordings_view``: not offered to filters or shown as metadata."""
KEY_COLUMNS = ("path", "file", "filename", "file_name", "recording")
"""Metadata CSV columns that can name a recording, in order of preference."""
MAX_METADATA_COLUMNS = 256
"""Metadata columns an archive holds (besides the one naming the recording), over every import:
each is a column of the view every filter and search reads, and the import's memory grows with
columns, not bytes (a 169 KB CSV of 20,000 columns took 22.9 GB; 2,000 took 0.6 GB)."""
MAX_HEADER_BYTES = 128 * 1024
"""The header line is read alone, before the CSV reader sees the file: 257 names of 64 characters
fit, however they are written."""
MAX_ROW_BYTES = 1024 * 1024
"""A row of the CSV, and so any cell of it (DuckDB's reader refuses longer lines)."""
_DELIMITERS = ",;|\t"
"""What DuckDB's sniffer may choose; the header is counted by whichever splits it most."""
OUTPUT_PREFIX = "meta."
"""Every output (CLI tables, CSV/JSON/Parquet, DataFrames, the app) shows a metadata column as
``meta.<column>``: the user's columns may be named anything (``score``, ``rank``, ``label``), and
soundtrace's own fields never carry the prefix, so neither can shadow the other."""


def output_name(column: str) -> str:
    """A metadata column's name in outputs (``agent`` -> ``meta.agent``)."""
    return OUTPUT_PREFIX + column


def check_csv(csv_path: Path) -> None:
    """MetadataError now if ``csv_path`` cannot be imported (unreadable, no key column, a bad header):
    a run checks its CSVs before it creates an archive."""
    con = duckdb.connect(":memory:")
    try:
        _read(con, Path(csv_path).resolve())
    finally:
        con.close()


def _read(con: duckdb.DuckDBPyConnection, csv_path: Path) -> tuple[duckdb.DuckDBPyRelation, dict[str, str], str]:
    """(the CSV as a relation, header -> column name, the column naming the recording)."""
    if not csv_path.is_file():
        raise MetadataError(f"Metadata file {csv_path} does not exist.")
    _check_header(csv_path)
    try:
        rel = con.read_csv(str(csv_path), header=True, max_line_size=MAX_ROW_BYTES)
        columns = rel.columns
    except duckdb.Error as exc:
        raise MetadataError(_read_error(csv_path, exc)) from None
    names = {column: _column_name(column, csv_path.name) for column in columns}
    lowered = {c.lower(): c for c in columns}
    key = next((lowered[k] for k in KEY_COLUMNS if k in lowered), None)
    if key is None:
        raise MetadataError(
            f"Metadata CSV {csv_path.name} needs a column naming the recording (one of: {', '.join(KEY_COLUMNS)})."
        )
    return rel, names, key


def _check_header(csv_path: Path) -> None:
    """MetadataError for more than ``MAX_METADATA_COLUMNS`` columns, from the header line alone:
    DuckDB's reader (its sniffer, then the table) takes memory by the column before any check."""
    try:
        with open(csv_path, "rb") as f:
            head = f.read(MAX_HEADER_BYTES + 1)
    except OSError as exc:
        raise MetadataError(f"Cannot read metadata CSV {csv_path}: {exc.strerror or exc}.") from None
    end = _first_record_end(head)
    if end is None and len(head) > MAX_HEADER_BYTES:
        raise MetadataError(
            f"Metadata CSV {csv_path.name} has a header line longer than {MAX_HEADER_BYTES // 1024} KB; a metadata CSV has "
            f"at most {MAX_METADATA_COLUMNS} columns besides the one naming the recording, each named in 64 characters."
        )
    line = head[:end].decode("utf-8", errors="replace").lstrip("\ufeff")
    columns = max(_fields(line, delimiter) for delimiter in _DELIMITERS)
    if columns - 1 > MAX_METADATA_COLUMNS:
        raise MetadataError(too_many_columns(f"Metadata CSV {csv_path.name} has {columns:,} columns"))


def too_many_columns(what: str) -> str:
    return (f"{what}; an archive keeps at most {MAX_METADATA_COLUMNS} metadata columns besides the one naming "
            "the recording, so remove columns from the CSV.")


def _first_record_end(head: bytes) -> int | None:
    """Where the first line ends (a line break outside double quotes), None if not in ``head``."""
    quoted = False
    for index, byte in enumerate(head):
        if byte == 0x22:
            quoted = not quoted
        elif byte in (0x0A, 0x0D) and not quoted:
            return index
    return None


def _fields(line: str, delimiter: str) -> int:
    try:
        return len(next(csv.reader([line], delimiter=delimiter), []))
    except csv.Error:  # a quote never closed: count every delimiter
        return line.count(delimiter) + 1


def _read_error(csv_path: Path, exc: duckdb.Error) -> str:
    if "Maximum line size of" in str(exc):
        return f"Metadata CSV {csv_path.name} has a row longer than {MAX_ROW_BYTES // 1024 ** 2} MB, the most a row (or a cell) may hold."
    return f"Cannot read metadata CSV {csv_path}: {str(exc).splitlines()[0]}"


class _Catalog(Protocol):
    """What the import needs of ``catalog.Catalog`` (which imports this module, so it is not imported here)."""

    con: duckdb.DuckDBPyConnection

    def transaction(self) -> ContextManager[None]: ...

    def one(self, sql: str, params: list | None = None) -> tuple | None: ...

    def bump_generation(self) -> None: ...


def import_csv(catalog: _Catalog, csv_path: Path) -> int:
    """Merge a user CSV into ``metadata``; rows for the same recording are replaced. Returns rows read."""
    csv_path = Path(csv_path).resolve()
    rel, names, key = _read(catalog.con, csv_path)
    columns = rel.columns
    taken = {c.lower() for c in _recording_columns(catalog.con)} | set(VIEW_COLUMNS) | {"_path", "_name", LINK_KEY}
    renames = {c: (f"meta_{names[c]}" if names[c].lower() in taken else names[c]) for c in columns}
    held = {c.lower() for c in _meta_columns(catalog.con)} | {renames[c].lower() for c in columns if c != key}
    if len(held) > MAX_METADATA_COLUMNS:
        raise MetadataError(too_many_columns(f"Importing {csv_path.name} would give this archive {len(held):,} metadata columns"))
    select = "".join(f', {quote_identifier(c)} AS {quote_identifier(renames[c])}' for c in columns if c != key)
    base = str(csv_path.parent)
    key_q = quote_identifier(key)
    try:
        with catalog.transaction():
            catalog.con.register("_csv", rel)
            catalog.con.execute(
                f"CREATE TEMP TABLE _incoming AS SELECT "
                f"CASE WHEN contains({key_q}::VARCHAR, '/') THEN "
                f"  CASE WHEN starts_with({key_q}::VARCHAR, '/') THEN {key_q}::VARCHAR "
                f"  ELSE ? || '/' || {key_q}::VARCHAR END END AS _path, "
                f"CASE WHEN NOT contains({key_q}::VARCHAR, '/') THEN {key_q}::VARCHAR END AS _name{select} "
                f"FROM _csv WHERE {key_q} IS NOT NULL",
                [base],
            )
            _normalise_incoming_paths(catalog.con)
            catalog.con.execute(  # one row per recording: the CSV's last row for a key wins
                "CREATE OR REPLACE TEMP TABLE _incoming AS SELECT * EXCLUDE (_row) FROM ("
                "SELECT *, row_number() OVER () AS _row FROM _incoming) "
                "QUALIFY row_number() OVER (PARTITION BY _path, _name ORDER BY _row DESC) = 1"
            )
            catalog.con.execute(
                "CREATE OR REPLACE TABLE metadata AS "
                "SELECT * FROM metadata m WHERE NOT EXISTS (SELECT 1 FROM _incoming i WHERE "
                "i._path IS NOT DISTINCT FROM m._path AND i._name IS NOT DISTINCT FROM m._name) "
                "UNION ALL BY NAME SELECT * FROM _incoming"
            )
            count = int(catalog.one("SELECT count(*) FROM _incoming")[0])
            catalog.con.execute("DROP TABLE _incoming")
            catalog.con.unregister("_csv")
            refresh_view(catalog.con)
            catalog.bump_generation()
    except duckdb.Error as exc:
        raise MetadataError(f"Cannot import metadata from {csv_path.name}: {str(exc).splitlines()[0]}") from None
    return count


def _normalise_incoming_paths(con) -> None:
    """'./calls/../calls/a.wav' in a CSV must meet the resolved path the indexer stored."""
    import pyarrow as pa  # here: a search never needs it (its import is 85 ms)

    raw = [r[0] for r in con.execute("SELECT DISTINCT _path FROM _incoming WHERE _path IS NOT NULL").fetchall()]
    mapping = pa.table({"raw": pa.array(raw, pa.string()), "norm": pa.array([os.path.normpath(p) for p in raw], pa.string())})
    con.register("_path_map", mapping)
    try:
        con.execute("UPDATE _incoming SET _path = m.norm FROM _path_map m WHERE _incoming._path = m.raw")
    finally:
        con.unregister("_path_map")


def _recording_columns(con) -> list[str]:
    return [r[0] for r in con.execute("DESCRIBE recordings").fetchall()]


def _meta_columns(con) -> list[str]:
    return [r[0] for r in con.execute("DESCRIBE metadata").fetchall() if r[0] not in ("_path", "_name")]


def _linked(con, recordings: str) -> str:
    """Each of ``recordings`` (a table or subquery, ours) with its metadata row resolved: a row keyed
    by path wins over one keyed by file name. Two equality joins (hash joins), not one join on an
    OR, which DuckDB runs as a nested loop. ``metadata`` holds one row per key (migration 007)."""
    select = "".join(
        f", CASE WHEN mp._path IS NOT NULL THEN mp.{quote_identifier(c)} ELSE mn.{quote_identifier(c)} END"
        f" AS {quote_identifier(c)}"
        for c in _meta_columns(con)
    )
    return (
        f"SELECT r.id AS {LINK_KEY}{select} FROM {recordings} r "
        "LEFT JOIN (SELECT * FROM metadata WHERE _path IS NOT NULL) mp ON mp._path = r.path "
        "LEFT JOIN (SELECT * FROM metadata WHERE _path IS NULL) mn ON mn._name = r.file_name "
        "WHERE mp._path IS NOT NULL OR mn._name IS NOT NULL"
    )


def refresh_view(con) -> None:
    """``recordings_view``: recordings with their metadata, the one surface filters run against.

    Which metadata row is a recording's is resolved once, into ``recording_metadata`` (here, for
    all; ``link_recordings`` for each one written), so the view is one join on the recording id: a
    filter on a metadata column is pushed into that table, and a search's hits join only their own
    rows (resolving by path and name at every query was ≈ 40 ms at 166,000 recordings)."""
    con.execute(f"CREATE OR REPLACE TABLE {RECORDING_METADATA} AS {_linked(con, 'recordings')}")
    joined = bool(_meta_columns(con))
    con.execute(
        f"CREATE OR REPLACE VIEW {RECORDING_VIEW} AS "
        f"SELECT r.*, to_timestamp(r.mtime)::TIMESTAMP AS modified_at"
        + (f", m.* EXCLUDE ({LINK_KEY}) FROM recordings r LEFT JOIN {RECORDING_METADATA} m ON m.{LINK_KEY} = r.id"
           if joined else " FROM recordings r")
    )


def link_recordings(con, recording_ids: list[int]) -> None:
    """Resolve the metadata of recordings just written (in the caller's transaction)."""
    unlink_recordings(con, recording_ids)
    chosen = "(SELECT * FROM recordings WHERE list_contains(?, id))"
    con.execute(f"INSERT INTO {RECORDING_METADATA} {_linked(con, chosen)}", [recording_ids])


def unlink_recordings(con, recording_ids: list[int]) -> None:
    con.execute(f"DELETE FROM {RECORDING_METADATA} WHERE list_contains(?, {LINK_KEY})", [recording_ids])


_REFUSED_IN_NAMES = frozenset('";`')
"""Signs no column header means; a name holding one is most likely an attack on some SQL builder
(``quote_identifier`` would keep it harmless here, but it is refused so that nobody has to)."""


def _column_name(name: str, csv_name: str) -> str:
    """A CSV header as a column name: trimmed; empty, over 64 characters, control characters and
    the refused signs get one sentence naming the column."""
    trimmed = name.strip()
    if not trimmed or len(trimmed) > 64 or any(ord(c) < 32 or ord(c) == 127 or c in _REFUSED_IN_NAMES for c in trimmed):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise MetadataError(
            f"Metadata CSV {csv_name} has a column named {shown!r} that cannot be used: a column name is 1 to 64 "
            "characters without quotes, semicolons, backticks or control characters; rename it in the CSV."
        )
    return trimmed
