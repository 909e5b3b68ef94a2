"""What ``--where`` may contain, as data: node kinds and types of DuckDB's parse tree, pure
scalar functions, cast targets and collations. Anything not named here is refused."""

from __future__ import annotations

COMPARISONS = frozenset(
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

CONJUNCTIONS = frozenset({"CONJUNCTION_AND", "CONJUNCTION_OR"})

OPERATORS = frozenset(
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

AGGREGATES = frozenset(
    {
        "count", "count_star", "sum", "avg", "mean", "min", "max", "first", "last",
        "any_value", "arg_min", "arg_max", "list", "array_agg", "string_agg", "group_concat",
        "median", "mode", "quantile", "stddev", "variance", "bool_and", "bool_or",
        "histogram", "approx_count_distinct",
    }
)  # fmt: skip

# SQL keywords DuckDB parses as column references and binds as functions when no column matches.
VALUE_KEYWORDS = frozenset({"current_date", "current_timestamp", "current_time", "localtimestamp", "localtime"})

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

COLLATIONS = frozenset({"nocase", "noaccent", "nfc"})

COMMON_KEYS = frozenset({"class", "type", "alias", "query_location", "query_location_length"})

NAMED_CLASSES = {
    "SUBQUERY": "Subqueries are not allowed in --where",
    "WINDOW": "Window functions are not allowed in --where",
    "STAR": "* and COLUMNS(...) are not allowed in --where",
    "PARAMETER": "Query parameters such as ? or $1 are not allowed in --where",
    "LAMBDA": "Lambda functions are not allowed in --where",
    "POSITIONAL_REFERENCE": "Positional references such as #1 are not allowed in --where",
}

# Per class: the keys (beyond the common ones) a node may carry; any other key is refused.
HANDLED: dict[str, frozenset[str]] = {
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
