"""The one way a name reaches SQL text: values are always bound parameters, and names
(columns from a metadata CSV, a view's columns) are quoted here and nowhere else."""


def quote_identifier(identifier: str) -> str:
    """A name in double quotes, inner quotes doubled: DuckDB reads back exactly that name, whatever it holds."""
    if not isinstance(identifier, str) or "\x00" in identifier:
        raise ValueError("an SQL identifier must be text without NUL characters")
    return '"' + identifier.replace('"', '""') + '"'
