"""Regular expressions in ``--where``: short, constant, and cheap for RE2 to run.

RE2 never backtracks, but it compiles counted repeats by writing them out, and a program too
large for its DFA is run by its NFA at a cost per character that grows with the program: 566
characters of nested bounded repeats (``((.{0,10}){0,10}){0,10}`` again and again) took a search
254 s, on every row. So each pattern must be a text constant (never built from data or from
pieces, which could not be checked), and a filter's patterns are measured as RE2 will write them
out: counted repeats multiply what they repeat, alternatives add. This scanner reads RE2's syntax
only as far as that size needs; whatever else is wrong with a pattern, DuckDB's binder says.
"""

from __future__ import annotations

from typing import Any

from indexer.errors import FilterError

REGEX_FUNCTIONS = frozenset({"regexp_matches", "regexp_full_match", "regexp_extract"})
"""Allowed functions whose second argument is a pattern (``~`` and ``SIMILAR TO`` parse to them)."""

MAX_PATTERN_LENGTH = 256
"""Characters of one pattern as written."""

MAX_REPEAT = 100
"""The largest count in ``{n}``, ``{n,}`` or ``{n,m}``."""

MAX_PATTERN_SIZE = 500
"""Characters of all of one filter's patterns written out (``.{0,100}`` is 100, ``(a|bc){0,10}``
30, ``((.{0,5}){0,10}){0,10}`` 500): within it the worst pattern measured costs about 3 µs per
character matched, and every pattern together stays within RE2's DFA."""


def pattern_text(function: str, argument: Any) -> str:
    """The pattern ``argument`` (a parse-tree node) holds, if it is a text constant."""
    literal = argument.get("literal") if isinstance(argument, dict) and argument.get("class") == "CONSTANT" else None
    text = literal.get("text") if isinstance(literal, dict) and literal.get("kind") == "STRING" else None
    if not isinstance(text, str):
        raise FilterError(f"The pattern of {function}() in --where must be a text constant, such as '^calls/.*[.]wav$'")
    return text


def pattern_size(text: str) -> int:
    """``text``'s size written out as RE2 compiles it; FilterError past the length or a count limit."""
    if len(text) > MAX_PATTERN_LENGTH:
        raise FilterError(f"A pattern in --where is at most {MAX_PATTERN_LENGTH} characters, and one has {len(text):,}")
    frames = [[0, 0, 0]]  # per open group: (closed alternatives, current alternative, last item)
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i = _after_escape(text, i, frames[-1])
            continue
        if ch == "[":
            i = _after_class(text, i)
            _item(frames[-1], 1)
            continue
        if ch == "(":
            after, opens = _group_prefix(text, i)
            if opens:
                frames.append([0, 0, 0])
            i = after
            continue
        elif ch == ")" and len(frames) > 1:
            done, current, _ = frames.pop()
            _item(frames[-1], done + current)
        elif ch == "|":
            frame = frames[-1]
            frame[0] += frame[1]
            frame[1] = frame[2] = 0
        elif ch in "*+?":
            pass  # a loop over the item: its size once
        elif ch == "{" and (counted := _counted(text, i)) is not None:
            times, i = counted
            frame = frames[-1]
            frame[1] += frame[2] * (times - 1)
            frame[2] *= times
            continue
        else:
            _item(frames[-1], 1)
        i += 1
    return sum(done + current for done, current, _ in frames)


def check_patterns_size(size: int) -> None:
    if size > MAX_PATTERN_SIZE:
        raise FilterError(
            f"The patterns in --where come to {size:,} characters with their counted repeats written out, and at most "
            f"{MAX_PATTERN_SIZE} are allowed (nested repeats such as ((a{{0,10}}){{0,10}}) multiply)"
        )


def _item(frame: list[int], size: int) -> None:
    frame[1] += size
    frame[2] = size


def _after_escape(text: str, i: int, frame: list[int]) -> int:
    """One escaped item (``\\d``, ``\\x{41}``, ``\\p{Greek}``); ``\\Q...\\E`` counts each character."""
    kind = text[i + 1 : i + 2]
    if kind == "Q":
        end = text.find("\\E", i + 2)
        end = len(text) if end == -1 else end
        for _ in range(end - i - 2):
            _item(frame, 1)
        return end + 2
    _item(frame, 1)
    if kind in ("p", "P", "x") and text[i + 2 : i + 3] == "{":
        end = text.find("}", i + 3)
        return len(text) if end == -1 else end + 1
    return i + {"p": 3, "P": 3, "x": 4}.get(kind, 2)  # \pL, \x41, \d


def _after_class(text: str, i: int) -> int:
    """The index after ``[...]`` (``[]a]`` and ``[^]a]`` hold a ``]``; ``[:alpha:]`` and escapes inside)."""
    j = i + 1
    if text[j : j + 1] == "^":
        j += 1
    if text[j : j + 1] == "]":
        j += 1
    while j < len(text) and text[j] != "]":
        if text[j] == "\\":
            j += 2
        elif text.startswith("[:", j) and (end := text.find(":]", j + 2)) != -1:
            j = end + 2
        else:
            j += 1
    return j + 1


def _group_prefix(text: str, i: int) -> tuple[int, bool]:
    """(the index after ``(``, ``(?:``, ``(?P<name>`` or ``(?i)``, whether it opens a group)."""
    if text[i + 1 : i + 2] != "?":
        return i + 1, True
    j = i + 2
    while j < len(text) and text[j] not in ":)>":
        j += 1
    return j + 1, text[j : j + 1] != ")"


def _counted(text: str, i: int) -> tuple[int, int] | None:
    """(how many times, index after) for ``{n}``, ``{n,}``, ``{n,m}`` (and a lazy ``?``); None when
    the brace is a plain character, as RE2 reads it."""
    end = text.find("}", i)
    if end == -1:
        return None
    low, comma, high = text[i + 1 : end].partition(",")
    if not low.isdigit() or (high and not high.isdigit()) or not low.isascii() or not high.isascii():
        return None
    counts = [int(low)] + ([int(high)] if high else [])
    if max(counts) > MAX_REPEAT:
        raise FilterError(f"A counted repeat in a --where pattern goes to at most {MAX_REPEAT}, not {text[i : end + 1]}")
    times = counts[-1] if high else counts[0] + (1 if comma else 0)
    after = end + 1
    return max(times, 1), after + (text[after : after + 1] == "?")
