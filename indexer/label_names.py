"""Turn what a person typed as labels into the clean list the text encoder sees.

People type labels in English, Chinese or both, separated by whatever their keyboard gives
(``,`` ``，`` ``、`` ``;`` ``；`` or new lines), sometimes quoting a label that itself contains
a comma. Small differences in spelling ("Dog barking." vs "dog barking") must not create two
classes, and stray punctuation must not reach the model.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence

from indexer.errors import LabelError

MAX_LABEL_LENGTH = 200
"""CLAP's text encoder truncates long prompts anyway; longer text is almost surely a paste error."""

MAX_TYPED_LENGTH = 1_000
"""Text typed for one label, before cleaning: longer is refused before any of it is cleaned, so
60,000 "(" before an "x" is an error, not the label "x"."""

MAX_LABELS = 1_000
"""Labels in one list (``--labels``, classify, a label set): each is a text to embed and a column
of every audit's scores; AudioSet's ontology has 527."""

MAX_LIST_LENGTH = MAX_LABELS * MAX_LABEL_LENGTH
"""Characters of one typed list of labels, checked before it is split."""

SEPARATORS = frozenset(",，、;；\n\r")

# Opening quote -> closing quote that protects separators inside a label.
PROTECTING_QUOTES = {'"': '"', "“": "”"}

# Bracket-like pairs, stripped at the edges only when that does not unbalance the label.
PAIRS = {
    "(": ")", "[": "]", "{": "}", "<": ">", "（": "）", "［": "］", "｛": "｝",
    "「": "」", "『": "』", "【": "】", "《": "》", "〈": "〉", "〔": "〕", "“": "”", "‘": "’",
    "«": "»", "‹": "›", "﹁": "﹂", "﹃": "﹄",
}  # fmt: skip
_CLOSERS = {close: open_ for open_, close in PAIRS.items()}

# The same character opens and closes these quotes.
SYMMETRIC_QUOTES = frozenset("\"'`＂＇")

# Plain punctuation that carries no meaning at either end of a label.
EDGE_PUNCTUATION = frozenset(
    ".,;:!?*~-–—…•·・" "。，、；：！？～＊"
)  # fmt: skip

NO_LABELS_MESSAGE = 'No labels given: type one or more labels separated by commas, e.g. "dog barking, glass breaking".'


def parse_labels(text: str | Sequence[str]) -> list[str]:
    """Split (if given one string), normalise and de-duplicate labels, keeping first spellings.

    A sequence is taken as labels already split by the caller: each is normalised, none split.
    """
    if isinstance(text, str):
        check_list_length(text)
        raw = split_labels(text)
    else:
        raw = list(text)
        for item in raw:
            if not isinstance(item, str):
                raise LabelError(f"Labels must be text, but one was {type(item).__name__}.")
    labels: list[str] = []
    seen: set[str] = set()
    for item in raw:
        label = normalise_label(item)
        if not label:
            continue
        if len(label) > MAX_LABEL_LENGTH:
            preview = label[:40] + "…"
            raise LabelError(
                f'Label "{preview}" is longer than {MAX_LABEL_LENGTH} characters; shorten it.'
            )
        key = label_key(label)
        if key not in seen:
            seen.add(key)
            labels.append(label)
            check_label_count(len(labels))
    if not labels:
        raise LabelError(NO_LABELS_MESSAGE)
    return labels


def split_labels(text: str) -> list[str]:
    """Split on any separator except inside a closed pair of double quotes; linear (a quote found
    never closed is not looked for again)."""
    parts: list[str] = []
    current: list[str] = []
    unclosed: set[str] = set()
    i = 0
    while i < len(text):
        ch = text[i]
        closer = PROTECTING_QUOTES.get(ch)
        end = text.find(closer, i + 1) if closer and closer not in unclosed else -1
        if closer and end == -1:
            unclosed.add(closer)
        if end != -1:
            current.append(text[i : end + 1])
            i = end + 1
            continue
        if ch in SEPARATORS:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def normalise_label(label: str) -> str:
    """Collapse whitespace and peel meaningless punctuation off both ends, keeping inner marks.

    Text over ``MAX_TYPED_LENGTH`` is refused first. The peeling moves two ends over one copy of
    the text, asking "is this character still inside?" of counts and "where does this bracket
    close?" of one precomputed pass, so it is linear in the text (it used to copy the rest once
    per character peeled: 60,000 "(" took minutes)."""
    check_typed_length(label)
    text = " ".join(label.split())
    lo, hi = 0, len(text)
    inside = Counter(text)  # the characters of text[lo:hi]
    closes = _closing_positions(text)
    while lo < hi:
        first, last = text[lo], text[hi - 1]
        if first.isspace() or first in EDGE_PUNCTUATION:
            peel = 1, 0
        elif last.isspace() or last in EDGE_PUNCTUATION:
            peel = 0, 1
        elif first in SYMMETRIC_QUOTES and last == first and hi - lo > 1:
            peel = 1, 1
        elif first in SYMMETRIC_QUOTES and inside[first] == 1:  # not again after the first
            peel = 1, 0
        elif last in SYMMETRIC_QUOTES and inside[last] == 1:
            peel = 0, 1
        elif first in PAIRS and closes.get(lo) == hi - 1:
            peel = 1, 1
        elif first in PAIRS and not inside[PAIRS[first]]:
            peel = 1, 0
        elif last in _CLOSERS and not inside[_CLOSERS[last]]:
            peel = 0, 1
        else:
            break
        if peel[0]:
            inside[text[lo]] -= 1
            lo += 1
        if peel[1]:
            hi -= 1
            inside[text[hi]] -= 1
    return text[lo:hi]


def check_typed_length(label: str) -> None:
    """LabelError, before any cleaning, for text longer than ``MAX_TYPED_LENGTH``."""
    if len(label) > MAX_TYPED_LENGTH:
        preview = " ".join(label[:MAX_TYPED_LENGTH].split())[:40]
        raise LabelError(f'Label "{preview}…" is longer than {MAX_LABEL_LENGTH} characters; shorten it.')


def check_list_length(text: str) -> None:
    if len(text) > MAX_LIST_LENGTH:
        raise LabelError(
            f"The labels are {len(text):,} characters long; a list is at most {MAX_LIST_LENGTH:,} "
            f"({MAX_LABELS:,} labels of up to {MAX_LABEL_LENGTH} characters)."
        )


def check_label_count(count: int) -> None:
    if count > MAX_LABELS:
        raise LabelError(f"More than {MAX_LABELS:,} labels were given; one list holds at most {MAX_LABELS:,}, so split it.")


def label_key(label: str) -> str:
    """What two labels must share to count as the same class."""
    return unicodedata.normalize("NFKC", label).casefold()


def _closing_positions(text: str) -> dict[int, int]:
    """Index of each opening bracket -> the index of the bracket closing it (brackets of one kind
    counted, as a reader scanning on from it would), for those that close."""
    open_at: dict[str, list[int]] = {}
    closes: dict[int, int] = {}
    for index, ch in enumerate(text):
        if ch in PAIRS:
            open_at.setdefault(ch, []).append(index)
        elif ch in _CLOSERS and open_at.get(_CLOSERS[ch]):
            closes[open_at[_CLOSERS[ch]].pop()] = index
    return closes
