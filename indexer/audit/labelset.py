"""Label sets: the named list of labels an audit scores against every window of an archive.

A label set is written once, kept in a file next to the archive, reviewed like code and saved
with every audit run, so it is strict: an unknown key (``treshold``) is an error naming its line,
never silently ignored (``labelset_yaml`` reads the file). The YAML format::

    name: call-centre QA            # required
    mode: exclusive                  # or multi-label (default exclusive)
    threshold: 0.25                  # default per-label threshold: a cosine score or "top 1%"
    min_score: 0.2                   # optional: nothing scoring below is reported
    min_confidence: 0.6              # optional, 0..1: the confidence a flag needs
    labels:                          # required, non-empty
      - complaint                    # short form: just the name
      - humming but not alarm        # short form with an exclusion
      - name: abuse
        prompts: [customer swearing at the agent, insults]   # or one string; alias: synonyms
        not: [music]                 # or one string; alias: exclude
        threshold: top 0.5%
      - learned: customer yelling    # a learned label (soundtrace label learn), its newest version;
        not: [music]                 # not and threshold as above (default: where its scorer says present)

Each label becomes one query vector, the average of its prompts: the name first, then its extra
prompts (normalised and de-duplicated with :mod:`indexer.label_names`' rules). ``not`` lists concepts
whose similarity lowers the label's score (the engine applies the rule, see ``indexer.audit.scoring``).
A threshold is a cosine score in [-1, 1] (``0.3``) or a share of the archive (``top 0.5%``: the
recording is among the 0.5% highest-scoring for that label).

The inline form (``--labels``) is the origin tool's comma-separated list; a label containing
" but not " (or 但不是) is split into the label and its exclusions, several exclusions joined by
"and", "or", "/", 或, or by commas inside a quoted label. The same splitting applies to label
names in YAML; values listed under ``not`` are taken as written.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from indexer.label_names import (
    MAX_LABELS,
    NO_LABELS_MESSAGE,
    check_label_count,
    check_list_length,
    check_typed_length,
    label_key,
    normalise_label,
    parse_labels,
    split_labels,
)
from indexer.errors import LabelError, LabelSetError

Mode = Literal["exclusive", "multi-label"]
MODES: tuple[str, ...] = ("exclusive", "multi-label")

MAX_PROMPTS_PER_LABEL = 100
"""Texts of one label: its name, prompts and exclusions (a handful is usual; more average out)."""
MAX_PROMPTS = 5_000
"""Texts of one label set, every label's together, each one row the text encoder embeds: checked
while the YAML is read, so labels sharing an anchored list (``prompts: *p``) are refused long
before that list is copied into each (2,000 labels of 2,000 shared prompts were 4 million)."""

THRESHOLD_FORMS = 'a cosine score between -1 and 1 (e.g. 0.3) or a share of the archive such as "top 0.5%"'

# " but not " / "，但不是" between a label and what it excludes (also at the very start, to catch
# a label that has nothing before it).
_BUT_NOT = re.compile(r"(?:^|\s+)but\s+not(?=\s|$)\s*|\s*[，,]?\s*但不是\s*", re.IGNORECASE)
# What joins several exclusions after "but not".
_EXCLUSION_JOINERS = re.compile(r"\s+(?:and|or)\s+|\s*/\s*|[,，、;；]|或者|或", re.IGNORECASE)
_PERCENT = re.compile(r"(?:top\s*)?(?P<value>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*[%％]", re.IGNORECASE)
_TOP_WITHOUT_PERCENT = re.compile(r"top\s*(?P<value>[+-]?(?:\d+(?:\.\d*)?|\.\d+))", re.IGNORECASE)


# --- the parsed form ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """When a label counts as present: a cosine score, or a share of the archive a person can pick
    without knowing what cosine values CLAP gives."""

    kind: Literal["score", "top_percent"]
    value: float  # cosine in [-1, 1] for "score"; percent in (0, 100] for "top_percent"

    def __post_init__(self) -> None:
        if self.kind not in ("score", "top_percent"):
            raise ValueError(f'A threshold kind is "score" or "top_percent", not {self.kind!r}.')
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise ValueError(f"A threshold value must be a number, not {self.value!r}.")
        value = float(self.value)
        if self.kind == "score" and not -1.0 <= value <= 1.0:
            shown = number_text(value)
            hint = f' (for the top {shown}% of the archive write "top {shown}%")' if 0 < value <= 100 else ""
            raise ValueError(
                f"A score threshold is a cosine similarity between -1 and 1, and {shown} is outside that range{hint}."
            )
        if self.kind == "top_percent" and not 0.0 < value <= 100.0:
            raise ValueError(f"A top-percent threshold must be above 0% and at most 100%, not {number_text(value)}%.")
        object.__setattr__(self, "value", value)

    @classmethod
    def parse(cls, value: object) -> Threshold:
        """0.3 or "0.3" -> a score; "top 0.5%", "top 1 %", "0.5%" -> a share of the archive."""
        if isinstance(value, Threshold):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls("score", float(value))
        if isinstance(value, str):
            text = " ".join(value.split())
            if match := _PERCENT.fullmatch(text):
                return cls("top_percent", float(match["value"]))
            if match := _TOP_WITHOUT_PERCENT.fullmatch(text):
                raise ValueError(f'Threshold "{text}" needs a percent sign: write "top {match["value"]}%".')
            try:
                number = float(text)
            except ValueError:
                number = None
            if number is not None and math.isfinite(number):
                return cls("score", number)
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
        raise ValueError(f"Threshold {shown} is not understood; write {THRESHOLD_FORMS}.")

    def __str__(self) -> str:
        return number_text(self.value) if self.kind == "score" else f"top {number_text(self.value)}%"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value}


DEFAULT_THRESHOLD = Threshold("score", 0.3)


@dataclass(frozen=True)
class Label:
    """One class of the set: its prompt ensemble and the concepts it must not be confused with."""

    name: str
    prompts: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    threshold: Threshold | None = None  # overrides the set's default
    learned: bool = False
    """Scored by the newest version of the learned label of this name (``soundtrace label learn``), not by text;
    without a threshold of its own it flags where that scorer says "present"."""

    def to_dict(self) -> dict:
        data = {
            "name": self.name,
            "prompts": list(self.prompts),
            "exclude": list(self.exclude),
            "threshold": self.threshold.to_dict() if self.threshold else None,
        }
        if self.learned:  # only then: the digests of text-only sets stay what they were
            data["learned"] = True
        return data


@dataclass(frozen=True)
class LabelSet:
    """Everything an audit needs to know about what to look for, plus the text it came from."""

    name: str
    labels: tuple[Label, ...]
    mode: Mode = "exclusive"
    threshold: Threshold = DEFAULT_THRESHOLD
    min_score: float | None = None
    min_confidence: float | None = None
    source: str = field(default="", compare=False)

    def threshold_for(self, label: Label) -> Threshold:
        return label.threshold or self.threshold

    def to_dict(self) -> dict:
        """Canonical plain data (no source text): what the digest covers and audit runs store."""
        return {
            "name": self.name,
            "mode": self.mode,
            "threshold": self.threshold.to_dict(),
            "min_score": self.min_score,
            "min_confidence": self.min_confidence,
            "labels": [label.to_dict() for label in self.labels],
        }

    def digest(self) -> str:
        """Same content, same digest: comments, layout, key order and defaults spelled out don't count."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: dict, source: str = "") -> LabelSet:
        """Rebuild a set saved with ``to_dict`` (e.g. from an audit run), trusting it was valid."""

        def threshold(item: dict | None) -> Threshold | None:
            return Threshold(item["kind"], item["value"]) if item else None

        labels = tuple(
            Label(item["name"], tuple(item["prompts"]), tuple(item["exclude"]), threshold(item["threshold"]),
                  bool(item.get("learned", False)))
            for item in data["labels"]
        )
        return cls(
            name=data["name"], labels=labels, mode=data["mode"],
            threshold=threshold(data["threshold"]) or DEFAULT_THRESHOLD,
            min_score=data["min_score"], min_confidence=data["min_confidence"], source=source,
        )  # fmt: skip


# --- inline ------------------------------------------------------------------------------------


QUICK_NAME_CHARS = 60


def _quick_name(labels) -> str:
    """A run of a quick list is named by its labels, so run pickers tell runs apart."""
    text = ", ".join(label.name for label in labels)
    return text if len(text) <= QUICK_NAME_CHARS else text[: QUICK_NAME_CHARS - 1].rstrip(", ") + "…"


def inline_labelset(
    labels: str | Sequence[str],
    *,
    name: str | None = None,
    mode: str = "exclusive",
    threshold: object = None,
    min_score: float | None = None,
    min_confidence: float | None = None,
) -> LabelSet:
    """The command line's ``--labels "complaint, abuse, humming but not alarm"`` as a label set,
    named by its labels unless ``name`` is given.

    Labels are split and normalised like the origin tool's (``indexer.label_names``); repeating a label
    with the same exclusions is harmless, repeating it with different ones is an error.
    """
    try:
        return _inline(labels, name, mode, threshold, min_score, min_confidence)
    except LabelError as err:  # text too long, or too many labels
        raise LabelSetError(str(err)) from None


def _inline(labels, name, mode, threshold, min_score, min_confidence) -> LabelSet:
    if isinstance(labels, str):
        check_list_length(labels)
        parts, source = _join_leading_but_not(split_labels(labels)), labels
    else:
        parts = list(labels)
        for item in parts:
            if not isinstance(item, str):
                raise LabelSetError(f"Labels must be text, but one was {type(item).__name__}.")
        source = json.dumps(parts, ensure_ascii=False)
    found: dict[str, Label] = {}
    for part in parts:
        if not normalise_label(part):
            continue
        label_name, excluded = label_text(part, "A label")
        label = Label(label_name, (label_name,), excluded)
        earlier = found.setdefault(label_key(label_name), label)
        if earlier.exclude != label.exclude:
            raise LabelSetError(f"Label {label_name!r} is given twice with different exclusions; give it once.")
        check_label_count(len(found))
    if not found:
        raise LabelSetError(NO_LABELS_MESSAGE)
    check_bounds(tuple(found.values()))
    if mode not in MODES:
        raise LabelSetError(unknown_mode_message(mode))
    try:
        default = DEFAULT_THRESHOLD if threshold is None else Threshold.parse(threshold)
    except ValueError as err:
        raise LabelSetError(str(err)) from None
    return LabelSet(
        name=name or _quick_name(found.values()), labels=tuple(found.values()), mode=mode,  # type: ignore[arg-type]
        threshold=default, min_score=bounded(min_score, "min_score", -1.0, 1.0),
        min_confidence=bounded(min_confidence, "min_confidence", 0.0, 1.0), source=source,
    )  # fmt: skip


# --- shared helpers ----------------------------------------------------------------------------


def check_bounds(labels: Sequence[Label]) -> None:
    """LabelSetError when a set is larger than ``MAX_LABELS``, ``MAX_PROMPTS_PER_LABEL`` or
    ``MAX_PROMPTS`` allow: before any text is embedded (a set built in Python too)."""
    if len(labels) > MAX_LABELS:
        raise LabelSetError(f"The label set has {len(labels):,} labels; a set holds at most {MAX_LABELS:,}, so split it.")
    total = 0
    for label in labels:
        texts = len(label.prompts) + len(label.exclude)
        if texts > MAX_PROMPTS_PER_LABEL:
            raise LabelSetError(too_many_prompts(label.name, texts))
        total += texts
    if total > MAX_PROMPTS:
        raise LabelSetError(too_many_texts())


def too_many_prompts(name: str, count: int) -> str:
    return (f"Label {name!r} has {count:,} prompts and exclusions; a label takes at most "
            f"{MAX_PROMPTS_PER_LABEL} (its name among them).")


def too_many_texts() -> str:
    return f"The label set has more than {MAX_PROMPTS:,} prompts and exclusions in all (names included); split it."


def label_text(text: str, what: str) -> tuple[str, tuple[str, ...]]:
    """"humming but not alarm or siren" -> ("humming", ("alarm", "siren")), each part cleaned."""
    try:
        check_typed_length(text)  # before the "but not" pattern meets it
    except LabelError as err:
        raise LabelSetError(str(err)) from None
    name, *rest = _BUT_NOT.split(text)
    if rest and not normalise_label(name):
        raise LabelSetError(
            f'{what} ("{normalise_label(text)}") has nothing before "but not"; '
            'write the label first, as in "humming but not alarm".'
        )
    name = clean_text(name, what)
    pieces = [piece for chunk in rest for piece in _EXCLUSION_JOINERS.split(chunk) if normalise_label(piece)]
    if rest and not pieces:
        raise LabelSetError(f'Label {name!r} says "but not" with nothing after it; name what to exclude.')
    excluded = unique_texts(clean_text(piece, f"An exclusion of {name!r}") for piece in pieces)
    if label_key(name) in map(label_key, excluded):
        raise LabelSetError(f'Label {name!r} excludes itself; remove the "but not" part or rename the label.')
    return name, excluded


def _join_leading_but_not(parts: list[str]) -> list[str]:
    """Reattach "…, but not x" / "…，但不是x" that the comma split cut off its label."""
    joined: list[str] = []
    for part in parts:
        text = normalise_label(part)
        if text and joined and _BUT_NOT.match(text) and normalise_label(joined[-1]):
            joined[-1] = f"{joined[-1]} {text}"
        else:
            joined.append(part)
    return joined


def clean_text(text: str, what: str) -> str:
    """One label, prompt or exclusion under the origin tool's rules (edges, spaces, length)."""
    try:
        if not normalise_label(text):
            raise LabelSetError(f"{what} is empty.")
        return parse_labels([text])[0]
    except LabelError as err:
        raise LabelSetError(str(err)) from None


def unique_texts(texts) -> tuple[str, ...]:
    """First spelling of each text, in order, by the origin tool's sameness rule."""
    seen: dict[str, str] = {}
    for text in texts:
        seen.setdefault(label_key(text), text)
    return tuple(seen.values())


def bounded(value: Any, key: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise LabelSetError(f"{key} must be a number between {number_text(low)} and {number_text(high)}, not {value!r}.")
    return float(value)


def unknown_mode_message(mode: object) -> str:
    return (
        f"Unknown mode {mode!r}; use exclusive (one winner per window) "
        "or multi-label (every label above its threshold)."
    )


def number_text(value: float) -> str:
    """0.3 -> "0.3", 1.0 -> "1": the shortest text that reads back as the same float."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
