"""Reading a label set from YAML, strictly: every key known, every value checked, and an error
names the line and the problem (``treshold`` is a typo, not a silently ignored key)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from indexer.label_names import MAX_LABELS, label_key
from indexer.audit.labelset import (
    DEFAULT_THRESHOLD,
    MAX_PROMPTS,
    MAX_PROMPTS_PER_LABEL,
    MODES,
    THRESHOLD_FORMS,
    Label,
    LabelSet,
    Mode,
    Threshold,
    clean_text,
    label_text,
    number_text,
    too_many_prompts,
    too_many_texts,
    unique_texts,
    unknown_mode_message,
)
from indexer.errors import LabelSetError

SET_KEYS = ("name", "mode", "threshold", "min_score", "min_confidence", "labels")
LABEL_KEYS = ("name", "learned", "prompts", "synonyms", "not", "exclude", "threshold")
_ALIASES = {"synonyms": "prompts", "exclude": "not"}

MAX_LABELSET_CHARS = 1_000_000
"""A label set's text: room for ``MAX_PROMPTS`` texts of 200 characters and their keys; reading
YAML costs about 5 s per MB here."""

_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_FLOAT = "tag:yaml.org,2002:float"


def load_labelset(path: str | Path) -> LabelSet:
    """Read and parse a label set file; errors name the file and line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(4 * MAX_LABELSET_CHARS + 1)  # a UTF-8 character is at most 4 bytes
        if len(data) > 4 * MAX_LABELSET_CHARS:
            raise LabelSetError(f"Label set file {str(path)!r} is larger than a label set can be ({MAX_LABELSET_CHARS:,} characters).")
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text gives it
    except FileNotFoundError:
        raise LabelSetError(f"Label set file {str(path)!r} does not exist.") from None
    except UnicodeDecodeError:
        raise LabelSetError(f"Label set file {str(path)!r} is not UTF-8 text.") from None
    except OSError as err:
        raise LabelSetError(f"Label set file {str(path)!r} cannot be read: {err.strerror or err}.") from None
    return parse_labelset(text, origin=path.name)


def parse_labelset(text: str, origin: str = "<label set>") -> LabelSet:
    """Parse YAML text; every problem is a LabelSetError starting with ``origin:line:``."""
    return _YamlReader(origin).read(text)


class _YamlReader:
    """Walks yaml's composed node tree (not constructed data) so every error can name its line."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.texts_seen = 0
        """Names, prompts and exclusions counted so far, shared aliased lists once per use."""

    def fail(self, where: Node | int, message: str) -> LabelSetError:
        line = where if isinstance(where, int) else where.start_mark.line + 1
        return LabelSetError(f"{self.origin}:{line}: {message}")

    def read(self, text: str) -> LabelSet:
        root = self.compose(text)
        if root is None:
            raise self.fail(1, "The label set is empty; it needs at least a name and a list of labels.")
        if not isinstance(root, MappingNode):
            raise self.fail(
                root, f"The label set must be a mapping with keys such as name: and labels:, not {_kind(root)}."
            )
        keys = self.mapping(root, SET_KEYS, "the label set")
        if "name" not in keys:
            raise self.fail(root, "The label set has no name; add a line such as name: call-centre QA.")
        if "labels" not in keys:
            raise self.fail(root, "The label set has no labels; add labels: followed by one - label per line.")
        name = " ".join(self.text(keys["name"], "The label set's name").split())
        mode = self.mode(keys["mode"]) if "mode" in keys else "exclusive"
        threshold = self.threshold(keys["threshold"]) if "threshold" in keys else DEFAULT_THRESHOLD
        min_score = min_confidence = None
        if "min_score" in keys:
            min_score = self.number(keys["min_score"], "min_score", -1.0, 1.0, "a cosine score")
        if "min_confidence" in keys:
            min_confidence = self.number(keys["min_confidence"], "min_confidence", 0.0, 1.0, "a confidence")
        labels = self.labels(keys["labels"])
        return LabelSet(name, labels, mode, threshold, min_score, min_confidence, source=text)

    def compose(self, text: str) -> Node | None:
        if not isinstance(text, str):
            raise self.fail(1, f"A label set must be text, not {type(text).__name__}.")
        if len(text) > MAX_LABELSET_CHARS:
            raise self.fail(1, f"The label set is {len(text):,} characters long; a set is at most {MAX_LABELSET_CHARS:,}.")
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except RecursionError:
            raise self.fail(1, "Not valid YAML for a label set: it is nested too deeply.") from None
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            problem = (err.problem or err.context or "unreadable").rstrip(".")
            raise self.fail(mark.line + 1 if mark else 1, f"Not valid YAML: {problem}.") from None
        except yaml.reader.ReaderError as err:
            line = text.count("\n", 0, max(err.position, 0)) + 1
            code = err.character if isinstance(err.character, int) else ord(err.character)
            raise self.fail(line, f"Not valid YAML: the control character U+{code:04X} is not allowed.") from None
        except yaml.YAMLError as err:
            raise self.fail(1, f"Not valid YAML: {err}.") from None

    def mapping(self, node: MappingNode, allowed: Sequence[str], what: str) -> dict[str, Node]:
        """Keys (aliases resolved) -> value nodes, refusing unknown, repeated and non-text keys."""
        found: dict[str, Node] = {}
        spelled: dict[str, str] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise self.fail(key_node, f"A key in {what} must be a plain word, not {_kind(key_node)}.")
            key = key_node.value
            if key not in allowed:
                close = difflib.get_close_matches(key.lower(), allowed, n=1, cutoff=0.6)
                guess = f" (did you mean {close[0]}?)" if close else ""
                raise self.fail(
                    key_node, f"Unknown key {key!r} in {what}{guess}; the allowed keys are {', '.join(allowed)}."
                )
            canonical = _ALIASES.get(key, key)
            if canonical in found:
                first = spelled[canonical]
                if first == key:
                    raise self.fail(key_node, f"In {what}, {key!r} appears twice; give it once.")
                both = f"In {what}, {key!r} and {first!r} mean the same thing, so give only one of them."
                raise self.fail(key_node, both)
            found[canonical] = value_node
            spelled[canonical] = key
        return found

    def text(self, node: Node, what: str) -> str:
        """A scalar as written, so ``yes`` or ``404`` stay the text a person typed; never empty."""
        if not isinstance(node, ScalarNode):
            raise self.fail(node, f"{what} must be text, not {_kind(node)}.")
        if node.tag == _TAG_NULL or not node.value.strip():
            raise self.fail(node, f"{what} is empty.")
        return node.value

    def mode(self, node: Node) -> Mode:
        value = " ".join(self.text(node, "mode").split()).lower()
        if value not in MODES:
            raise self.fail(node, unknown_mode_message(node.value))
        return value  # type: ignore[return-value]

    def threshold(self, node: Node) -> Threshold:
        if not isinstance(node, ScalarNode) or node.tag == _TAG_NULL:
            raise self.fail(node, f"A threshold must be {THRESHOLD_FORMS}.")
        try:
            return Threshold.parse(node.value)
        except ValueError as err:
            message = str(err)
            if THRESHOLD_FORMS not in message:
                message = f"{message.rstrip('.')}; a threshold is {THRESHOLD_FORMS}."
            raise self.fail(node, message) from None

    def number(self, node: Node, key: str, low: float, high: float, what: str) -> float:
        bounds = f"between {number_text(low)} and {number_text(high)}"
        if not isinstance(node, ScalarNode) or node.tag not in (_TAG_INT, _TAG_FLOAT):
            shown = repr(node.value) if isinstance(node, ScalarNode) and node.tag != _TAG_NULL else _kind(node)
            raise self.fail(node, f"{key} must be {what} {bounds}, not {shown}.")
        value = float(yaml.constructor.SafeConstructor().construct_object(node))
        if not low <= value <= high:
            raise self.fail(node, f"{key} must be {what} {bounds}, and {node.value} is outside that range.")
        return value

    def labels(self, node: Node) -> tuple[Label, ...]:
        if isinstance(node, ScalarNode) and (node.tag == _TAG_NULL or not node.value.strip()):
            raise self.fail(node, "labels is empty; list at least one label, one - label per line.")
        if not isinstance(node, SequenceNode):
            raise self.fail(node, f"labels must be a list (one - label per line), not {_kind(node)}.")
        if not node.value:
            raise self.fail(node, "labels is empty; list at least one label, one - label per line.")
        if len(node.value) > MAX_LABELS:
            raise self.fail(node, f"The label set has {len(node.value):,} labels; a set holds at most {MAX_LABELS:,}, so split it.")
        labels: list[Label] = []
        first_line: dict[str, int] = {}
        for position, entry in enumerate(node.value, start=1):
            label, name_node = self.label(entry, position)
            key = label_key(label.name)
            if key in first_line:
                again = f"Label {label.name!r} appears twice (first on line {first_line[key]}); give each label once."
                raise self.fail(name_node, again)
            first_line[key] = name_node.start_mark.line + 1
            labels.append(label)
        return tuple(labels)

    def label(self, entry: Node, position: int) -> tuple[Label, Node]:
        """One entry of ``labels``: a bare name, or a mapping with name, prompts, not, threshold."""
        if isinstance(entry, ScalarNode):
            name_node, keys = entry, {}
        elif isinstance(entry, MappingNode):
            keys = self.mapping(entry, LABEL_KEYS, f"label {position}")
            if "learned" in keys:
                for key in ("name", "prompts"):
                    if key in keys:
                        raise self.fail(keys[key], f"Label {position} is learned: it is scored by its learned version, "
                                                   f"so it takes no {key}:; remove it.")
                keys["name"] = keys["learned"]
            if "name" not in keys:
                raise self.fail(entry, f"Label {position} has no name; add name: followed by the label.")
            name_node = keys["name"]
        else:
            raise self.fail(entry, f"Label {position} must be a name or a mapping with name:, not {_kind(entry)}.")
        written = self.text(name_node, f"Label {position}")
        try:
            name, from_name = label_text(written, f"Label {position}")
        except LabelSetError as err:
            raise self.fail(name_node, str(err)) from None
        self.count_texts(name_node, name, 1 + len(from_name) + sum(_count(keys.get(k)) for k in ("prompts", "not")))
        prompts = [(name_node, name)]
        if "prompts" in keys:
            items = self.texts(keys["prompts"], f"The prompts of {name!r}")
            prompts += [(item, self.clean(item, item.value, f"A prompt of {name!r}")) for item in items]
        excluded = [(name_node, text) for text in from_name]
        if "not" in keys:
            items = self.texts(keys["not"], f"The exclusions (not:) of {name!r}")
            excluded += [(item, self.clean(item, item.value, f"An exclusion of {name!r}")) for item in items]
        own = {label_key(text) for _, text in prompts}
        for where, text in excluded:
            if label_key(text) in own:
                own_text = f"Label {name!r} excludes {text!r}, which is its own name or prompt; remove one of them."
                raise self.fail(where, own_text)
        threshold = self.threshold(keys["threshold"]) if "threshold" in keys else None
        label = Label(name, unique_texts(text for _, text in prompts), unique_texts(text for _, text in excluded), threshold,
                      learned="learned" in keys)
        return label, name_node

    def count_texts(self, where: Node, name: str, count: int) -> None:
        """Refuse a label or a set with too many texts before they are read: an aliased list is
        one node however many labels use it, so this costs one step per label."""
        if count > MAX_PROMPTS_PER_LABEL:
            raise self.fail(where, too_many_prompts(name, count))
        self.texts_seen += count
        if self.texts_seen > MAX_PROMPTS:
            raise self.fail(where, too_many_texts())

    def texts(self, node: Node, what: str) -> list[ScalarNode]:
        """A single string or a list of strings, as scalar nodes; never empty."""
        items = node.value if isinstance(node, SequenceNode) else [node]
        if not items:
            raise self.fail(node, f"{what} is an empty list; remove the key or list at least one.")
        for item in items:
            self.text(item, what)
        return items  # type: ignore[return-value]

    def clean(self, node: Node, text: str, what: str) -> str:
        try:
            return clean_text(text, what)
        except LabelSetError as err:
            raise self.fail(node, str(err)) from None


def _count(node: Node | None) -> int:
    """Texts a ``prompts:`` or ``not:`` value holds (a list, or one string)."""
    return 0 if node is None else len(node.value) if isinstance(node, SequenceNode) else 1


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "empty" if node.tag == _TAG_NULL else f"the single value {node.value!r}"
