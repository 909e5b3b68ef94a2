"""--where filters: useful expressions select the right rows, anything more is refused."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from indexer.errors import FilterError
from indexer.search.where import validate_where
from indexer.search.where_allowlist import ALLOWED_FUNCTIONS, CAST_TYPES, OPERATOR_FUNCTIONS

ROWS = [
    # id, agent, site, date, duration_s, notes, started_at
    (1, "A17", "north", "2024-01-05", 30.0, "calm", "2024-01-05 09:00:00"),
    (2, "A17", "south", "2023-12-30", 95.5, None, "2023-12-30 17:30:00"),
    (3, "B02", "north", "2024-03-10", 61.0, "angry customer", "2024-03-10 11:15:00"),
    (4, "b02", "west", "2022-07-01", 12.0, "alarm test", "2022-07-01 08:00:00"),
    (5, "C33", "south", "2024-06-30", 240.0, None, "2024-06-30 23:59:00"),
]
ALL_IDS = [row[0] for row in ROWS]


@pytest.fixture()
def con():
    con = duckdb.connect(":memory:")
    con.execute(
        "CREATE TABLE recordings (recording_id INTEGER, agent VARCHAR, site VARCHAR, date DATE,"
        " duration_s DOUBLE, notes VARCHAR, started_at TIMESTAMP)"
    )
    con.executemany("INSERT INTO recordings VALUES (?, ?, ?, ?, ?, ?, ?)", ROWS)
    con.execute("CREATE VIEW recordings_view AS SELECT * FROM recordings")
    yield con
    con.close()


@pytest.fixture()
def columns(con):
    return {name: type_ for name, type_, *_ in con.execute("DESCRIBE recordings_view").fetchall()}


def select_ids(con, columns, expr: str) -> list[int]:
    safe = validate_where(expr, columns)
    sql = f"SELECT recording_id FROM recordings_view WHERE ({safe}) ORDER BY recording_id"
    return [row[0] for row in con.execute(sql).fetchall()]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("agent = 'A17'", [1, 2]),
        ("agent = 'A17' and duration_s > 60", [2]),
        ("agent IN ('B02', 'C33')", [3, 5]),
        ("agent NOT IN ('B02', 'C33')", [1, 2, 4]),
        ("duration_s BETWEEN 30 AND 100", [1, 2, 3]),
        ("duration_s NOT BETWEEN 30 AND 100", [4, 5]),
        ("notes LIKE '%customer%'", [3]),
        ("agent ILIKE 'b%'", [3, 4]),
        ("agent NOT LIKE 'A%'", [3, 4, 5]),
        ("agent GLOB 'B*'", [3]),
        ("agent SIMILAR TO '[AB].*'", [1, 2, 3]),
        ("agent ~ '^[a-z]'", [4]),
        ("date >= DATE '2024-01-01'", [1, 3, 5]),
        ("date < '2023-01-01'", [4]),
        ("year(date) = 2024", [1, 3, 5]),
        ("extract(month FROM date) = 12", [2]),
        ("date_trunc('month', date) = DATE '2024-03-01'", [3]),
        ("strftime(date, '%Y-%m') = '2024-06'", [5]),
        ("dayname(date) = 'Friday'", [1, 4]),
        ("started_at > TIMESTAMP '2024-03-01' - INTERVAL 1 DAY", [3, 5]),
        ("hour(started_at) >= 17", [2, 5]),
        ("date <= current_date", ALL_IDS),
        ("date <= today()", ALL_IDS),
        ("NOT agent = 'A17'", [3, 4, 5]),
        ("notes IS NULL", [2, 5]),
        ("notes IS NOT NULL AND site = 'north'", [1, 3]),
        ("duration_s * 2 + 10 > 300", [5]),
        ("duration_s / 60 >= 1 OR recording_id % 2 = 0", [2, 3, 4, 5]),
        ("-duration_s < -100", [5]),
        ("CAST(duration_s AS INTEGER) = 61", [3]),
        ("duration_s::INTEGER = 96", [2]),
        ("TRY_CAST(agent AS INTEGER) IS NULL", ALL_IDS),
        ("CAST(duration_s AS DECIMAL(10, 1)) = 95.5", [2]),
        ("CASE WHEN site = 'north' THEN duration_s > 40 ELSE duration_s < 20 END", [3, 4]),
        ("lower(agent) = 'b02'", [3, 4]),
        ("upper(agent) = 'B02' AND length(site) = 4", [4]),
        ("agent = 'b02' COLLATE nocase", [3, 4]),
        ("coalesce(notes, 'none') = 'none'", [2, 5]),
        ("contains(notes, 'alarm') OR starts_with(site, 'so')", [2, 4, 5]),
        ("abs(round(duration_s) - 60) <= 1", [3]),
        ("agent || '/' || site = 'A17/south'", [2]),
        ("list_contains(['north', 'west'], site)", [1, 3, 4]),
        ("site IN ['north']", [1, 3]),
        ("Agent = 'C33'", [5]),
        ('"agent" = \'C33\'', [5]),
        ("(agent = 'A17')", [1, 2]),
        ("agent = $$C33$$", [5]),
        ("true", ALL_IDS),
        ("  agent = 'C33'  \n", [5]),
    ],
)
def test_accepted_filters_select_expected_rows(con, columns, expr, expected):
    assert select_ids(con, columns, expr) == expected


def test_returns_trimmed_expression(columns):
    assert validate_where("  agent = 'A17'\n", columns) == "agent = 'A17'"


def test_comment_markers_inside_strings_are_fine(con, columns):
    assert select_ids(con, columns, "notes <> 'x -- y /* z */'") == [1, 3, 4]


REFUSED = [
        ("", "empty"),
        ("   \n ", "empty"),
        ("(SELECT count(*) FROM recordings) > 0", "Subqueries are not allowed"),
        ("EXISTS (SELECT 1 FROM recordings)", "Subqueries are not allowed"),
        ("agent IN (SELECT agent FROM recordings)", "Subqueries are not allowed"),
        ("agent = ANY (SELECT agent FROM recordings)", "Subqueries are not allowed"),
        ("read_csv('/etc/passwd') IS NOT NULL", "Function 'read_csv' is not allowed in --where"),
        ("read_text('/etc/passwd') IS NOT NULL", "Function 'read_text' is not allowed"),
        ("1; DROP TABLE recordings", "single boolean expression"),
        ("1=1; SELECT 1", "single boolean expression"),
        ("agent = 'A17';", "single boolean expression"),
        ("agent = 'a' UNION SELECT agent FROM recordings", "single boolean expression"),
        ("agent = 'a' INTERSECT SELECT 1", "single boolean expression"),
        ("agent = 'a' ORDER BY 1", "not a query clause"),
        ("agent = 'a' LIMIT 1", "not a query clause"),
        ("agent = 'a' GROUP BY agent", "not a query clause"),
        ("agent = 'a' QUALIFY true", "not a query clause"),
        ("agent = 'a' USING SAMPLE 1", "not a query clause"),
        ("1=1) OR (1=1", "not a valid expression"),
        ("agnt = 'A17'", "Unknown column 'agnt' in --where"),
        ("recordings.agent = 'A17'", "plain column name"),
        ("meta.agent = 'A17'", "write 'agent', not 'meta.agent'"),  # the outputs' name, refused with the way out
        ("current_user = 'x'", "Unknown column 'current_user'"),
        ("no_such_fn(agent) = 1", "Function 'no_such_fn' is not allowed in --where"),
        ("getenv('HOME') = 'x'", "Function 'getenv' is not allowed"),
        ("current_setting('threads') = '1'", "Function 'current_setting' is not allowed"),
        ("nextval('seq') > 0", "Function 'nextval' is not allowed"),
        ("setseed(0.5) IS NULL", "Function 'setseed' is not allowed"),
        ("random() > 0.5", "Function 'random' is not allowed"),
        ("main.lower(agent) = 'a17'", "plain name"),
        ("agent.lower() = 'a17'", "plain name"),
        ("count(*) > 1", "Aggregate function 'count' is not allowed"),
        ("sum(duration_s) > 1", "Aggregate function 'sum' is not allowed"),
        ("row_number() OVER () > 1", "Window functions are not allowed"),
        ("COLUMNS(*) > 1", "COLUMNS"),
        ("COLUMNS('a.*') = 'x'", "COLUMNS"),
        ("agent = ?", "parameters"),
        ("agent = $1", "parameters"),
        ("duration_s = #1", "Positional references"),
        ("list_transform([1], x -> x + 1) IS NULL", "not allowed"),
        ("agent = 'A17' -- and site = 'x'", "Comments"),
        ("agent = /* hi */ 'A17'", "Comments"),
        ("agent = 'A17' /*", "Comments"),
        ("agent::JSON IS NULL", "Casting to type 'JSON'"),
        ("agent = 'a' COLLATE some_extension_collation", "Collation"),
        ("agent", "boolean expression"),
        ("duration_s + 1", "boolean expression"),
        ("lower(duration_s) = 'x'", "cannot be applied"),
        ("date > DATE 'not a date'", "cannot be applied"),
        ("agent = 'a\x00' OR true", "control character"),
        ("NOT " * 100 + "true", "nested"),
        ("NOT " * 500 + "true", "nested"),
        # statements, files, extensions, settings: none of it can ride along
        ("COPY recordings TO 'leak.csv'", "not a valid expression"),
        ("true) ; COPY (SELECT 1) TO 'leak.csv' ; SELECT (1", "single boolean expression"),
        ("ATTACH 'other.duckdb' AS other", "not a valid expression"),
        ("true; ATTACH 'other.duckdb'", "single boolean expression"),
        ("INSTALL httpfs", "not a valid expression"),
        ("true; INSTALL httpfs; LOAD httpfs", "single boolean expression"),
        ("PRAGMA database_list", "not a valid expression"),
        ("true; PRAGMA enable_profiling", "single boolean expression"),
        ("true; SET enable_external_access = true", "single boolean expression"),
        ("read_parquet('x.parquet') IS NULL", "Function 'read_parquet' is not allowed"),
        ("read_json_auto('x.json') IS NULL", "Function 'read_json_auto' is not allowed"),
        ("read_blob('/etc/passwd') IS NULL", "Function 'read_blob' is not allowed"),
        ("sniff_csv('/etc/passwd') IS NULL", "Function 'sniff_csv' is not allowed"),
        ("glob('/etc/*') IS NOT NULL", "Function 'glob' is not allowed"),
        ("agent IN (FROM read_csv('/etc/passwd'))", "Subqueries are not allowed"),
        ("agent = (SELECT max(agent) FROM duckdb_settings())", "Subqueries are not allowed"),
        ("agent = 'x' /* ; DROP TABLE recordings */", "Comments"),
        # size, depth and growth: a filter may fail, never take the machine
        ("agent = 'x' " + "OR agent = 'y' " * 7000, "longer than"),
        ("(" * 1000 + "true" + ")" * 1000, "depth limit"),
        ("lower(" * 300 + "agent" + ")" * 300 + " = 'a'", "nested"),
        ("length(" + "replace(" * 9 + "'aaaa'" + ", 'a', 'aaaa')" * 9 + ") > 3", "replace() inside another replace()"),
        ("length(replace(concat(replace(agent, 'a', 'aa'), 'x'), 'a', 'aa')) > 3", "replace() inside another replace()"),
        ("replace(agent, 'a', agent) = 'x'", "text constant of at most 32"),
        ("replace(agent, 'a', '" + "b" * 33 + "') = 'x'", "text constant of at most 32"),
]


@pytest.mark.parametrize(("expr", "message"), REFUSED, ids=[f"{i}:{e[:30]}" for i, (e, _) in enumerate(REFUSED)])
def test_rejected_filters_explain_why(columns, expr, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FilterError) as info:
        validate_where(expr, columns)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert list(Path(tmp_path).iterdir()) == []


def test_short_replacements_are_allowed(con, columns):
    assert select_ids(con, columns, "replace(agent, 'A', 'agent-') = 'agent-17'") == [1, 2]


def test_unknown_column_lists_known_columns(columns):
    with pytest.raises(FilterError) as info:
        validate_where("agnt = 'A17'", columns)
    assert str(info.value) == (
        "Unknown column 'agnt' in --where (did you mean 'agent'?); known columns: "
        "recording_id, agent, site, date, duration_s, notes, started_at"
    )


def test_non_text_is_rejected(columns):
    with pytest.raises(FilterError):
        validate_where(None, columns)  # type: ignore[arg-type]


def test_types_the_sandbox_cannot_build_skip_binding_only():
    columns = {"mood": "my_enum_type"}
    assert validate_where("mood = 'happy'", columns) == "mood = 'happy'"
    with pytest.raises(FilterError, match="Unknown column"):
        validate_where("other = 'happy'", columns)


def test_allowlist_names_are_real_pure_duckdb_functions():
    con = duckdb.connect(":memory:")
    kinds: dict[str, set[str]] = {}
    for name, kind in con.execute("SELECT function_name, function_type FROM duckdb_functions()").fetchall():
        kinds.setdefault(name.lower(), set()).add(kind)
    for name in ALLOWED_FUNCTIONS - OPERATOR_FUNCTIONS - {"current_date", "current_timestamp", "row", "coalesce"}:
        assert name in kinds, name
        assert kinds[name] <= {"scalar", "macro"}, (name, kinds[name])
    for name in CAST_TYPES - {"list"}:
        con.execute(f'SELECT CAST(NULL AS "{name}")' if " " in name else f"SELECT CAST(NULL AS {name})")


def _statement_shell(con, sql: str):
    """The parsed statement without its WHERE clause or source positions."""
    parsed = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    assert not parsed["error"], parsed
    assert len(parsed["statements"]) == 1

    def strip(node):
        if isinstance(node, dict):
            return {
                k: strip(v)
                for k, v in node.items()
                if k not in ("query_location", "query_location_length", "where_clause")
            }
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(parsed["statements"][0])


HOSTILE = [
    "1=1) OR (1=1",
    "1=1)) OR ((1=1",
    "agent = 'A17') UNION SELECT * FROM recordings WHERE (1=1",
    "agent = 'x' OR 1=1",
    "1=1) ; DROP TABLE recordings; SELECT (1",
    "1=1; DROP TABLE recordings",
    "true; DELETE FROM recordings",
    "true) ; COPY recordings TO 'leak.csv' ; SELECT (1",
    "agent = 'x' --",
    "agent = 'x' /* ) */",
    "agent = $$x') OR (1=1$$",
    "agent = 'x'' OR ''1''=''1'",
    "agent = E'\\'' OR 1=1 --'",
    "(SELECT 1) = 1",
    "recording_id IN (SELECT recording_id FROM recordings)",
    "EXISTS (FROM read_csv('/etc/passwd'))",
    "read_csv_auto('/etc/passwd') IS NULL",
    "glob('/etc/*') IS NOT NULL",
    "getvariable('x') IS NULL",
    "query('DROP TABLE recordings') IS NULL",
    "query_table('recordings') IS NULL",
    "current_database() = 'memory'",
    "duckdb_tables() IS NULL",
    "agent = 'a' WINDOW w AS ()",
    "1=1 UNION ALL SELECT 1",
    "agent = 'x') OR true OR (agent = 'y'",
    "true ORDER BY (SELECT 1)",
    "CAST(agent AS recordings) IS NULL",
    "agent = 'A17' AND \u037e DROP TABLE recordings",
    "agent = 'A17'\n; DROP TABLE recordings",
    "(agent = 'A17'",
    "agent = 'A17')",
    "'' = '' OR ''",
    "x'2729204f52202831' IS NOT NULL",
    "agent = 'A17' AND true",
]


@pytest.mark.parametrize("expr", HOSTILE)
def test_hostile_input_is_refused_or_harmless(con, columns, expr, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before_rows = con.execute("SELECT * FROM recordings ORDER BY recording_id").fetchall()
    before_tables = con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()
    try:
        safe = validate_where(expr, columns)
    except FilterError as err:
        assert str(err) and "\n" not in str(err)
        return
    sql = f"SELECT recording_id FROM recordings_view WHERE ({safe}) ORDER BY recording_id"
    assert _statement_shell(con, sql) == _statement_shell(
        con, "SELECT recording_id FROM recordings_view WHERE (true) ORDER BY recording_id"
    )
    ids = [row[0] for row in con.execute(sql).fetchall()]
    assert set(ids) <= set(ALL_IDS)
    assert con.execute("SELECT * FROM recordings ORDER BY recording_id").fetchall() == before_rows
    assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == before_tables
    assert list(Path(tmp_path).iterdir()) == []



def _with_extra_keys(serialize, extra):
    """A stand-in for a newer DuckDB whose serializer adds keys to every expression node."""

    def add(node):
        if isinstance(node, dict):
            node = {k: add(v) for k, v in node.items()}
            if "class" in node:
                node.update(extra)
            return node
        if isinstance(node, list):
            return [add(v) for v in node]
        return node

    return lambda con, sql: add(serialize(con, sql))


TOLERATED_BY_NEWER_PARSERS = [
    ("lower(agent) = 'b02'", [3, 4]),
    ("notes LIKE '%customer%'", [3]),
    ("duration_s * 2 + 10 > 300", [5]),
    ("year(date) = 2024", [1, 3, 5]),
    ("CAST(duration_s AS DECIMAL(10, 1)) = 95.5", [2]),
    ("CASE WHEN site = 'north' THEN duration_s > 40 ELSE duration_s < 20 END", [3, 4]),
]


@pytest.mark.parametrize("flags", [{"is_legacy_function_call": False}, {"a_new_flag": True, "a_count": 3, "a_name": ""}])
@pytest.mark.parametrize(("expr", "expected"), TOLERATED_BY_NEWER_PARSERS)
def test_new_scalar_flags_in_the_parse_tree_are_tolerated(con, columns, monkeypatch, flags, expr, expected):
    import indexer.search.where as where_module

    monkeypatch.setattr(where_module, "_serialize", _with_extra_keys(where_module._serialize, flags))
    assert select_ids(con, columns, expr) == expected


@pytest.mark.parametrize(
    "extra",
    [
        {"hidden": {"class": "FUNCTION", "function_name": "read_csv"}},
        {"hidden": [{"class": "COLUMN_REF", "column_names": ["x"]}]},
        {"target_schema": "information_schema"},
    ],
    ids=["object", "list", "name"],
)
def test_new_keys_that_could_hold_an_expression_or_a_name_are_refused(columns, monkeypatch, extra):
    import indexer.search.where as where_module

    monkeypatch.setattr(where_module, "_serialize", _with_extra_keys(where_module._serialize, extra))
    with pytest.raises(FilterError, match="not supported"):
        validate_where("lower(agent) = 'a17'", columns)
