"""Turn what a person typed as labels into the clean list the text encoder sees.

People type labels in English, Chinese or both, separated by whatever their keyboard gives
(``,`` ``，`` ``、`` ``;`` ``；`` or new lines), sometimes quoting a label that itself contains
a comma. Small differences in spelling ("Dog barking." vs "dog barking") must not create two
classes, and stray punctuation must not reach the model.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from indexer.errors import LabelError

MAX_LABEL_LENGTH = 200
"""CLAP's text encoder truncates long prompts anyway; longer text is almost surely a paste error."""

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
    if not labels:
        raise LabelError(NO_LABELS_MESSAGE)
    return labels


def split_labels(text: str) -> list[str]:
    """Split on any separator except inside a closed pair of double quotes."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        closer = PROTECTING_QUOTES.get(ch)
        end = text.find(closer, i + 1) if closer else -1
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
    """Collapse whitespace and peel meaningless punctuation off both ends, keeping inner marks."""
    label = " ".join(label.split())
    while label:
        first, last = label[0], label[-1]
        if first.isspace() or first in EDGE_PUNCTUATION:
            label = label[1:]
        elif last.isspace() or last in EDGE_PUNCTUATION:
            label = label[:-1]
        elif first in SYMMETRIC_QUOTES and last == first and len(label) > 1:
            label = label[1:-1]
        elif first in SYMMETRIC_QUOTES and first not in label[1:]:
            label = label[1:]
        elif last in SYMMETRIC_QUOTES and last not in label[:-1]:
            label = label[:-1]
        elif first in PAIRS and _matching_close(label) == len(label) - 1:
            label = label[1:-1]
        elif first in PAIRS and PAIRS[first] not in label[1:]:
            label = label[1:]
        elif last in _CLOSERS and _CLOSERS[last] not in label[:-1]:
            label = label[:-1]
        else:
            break
    return label


def label_key(label: str) -> str:
    """What two labels must share to count as the same class."""
    return unicodedata.normalize("NFKC", label).casefold()


def _matching_close(label: str) -> int:
    """Index of the bracket closing ``label[0]``, or -1 when it is never closed."""
    open_, close = label[0], PAIRS[label[0]]
    depth = 0
    for index, ch in enumerate(label):
        if ch == open_:
            depth += 1
        elif ch == close:
            depth -= 1
            if depth == 0:
                return index
    return -1
