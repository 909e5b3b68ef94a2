"""The two-column table the benchmarks print (measure, value)."""

from __future__ import annotations


def print_table(rows: list[tuple[str, str]], value_rule: int = 40) -> None:
    width = max(len(key) for key, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * value_rule}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
