"""Label sets from YAML files and inline strings: exact parses, thresholds, digests, and errors
that name the line a person has to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.errors import LabelSetError, QueryError
from indexer.audit.labelset import DEFAULT_THRESHOLD, Label, LabelSet, Threshold, inline_labelset
from indexer.audit.labelset_yaml import load_labelset, parse_labelset

LABELSETS = Path(__file__).resolve().parents[1] / "data" / "labelsets"
FORMS = 'a cosine score between -1 and 1 (e.g. 0.3) or a share of the archive such as "top 0.5%"'


def score(value: float) -> Threshold:
    return Threshold("score", value)


def top(value: float) -> Threshold:
    return Threshold("top_percent", value)


# --- the example files -------------------------------------------------------------------------


def test_call_centre_example_parses_exactly():
    labelset = load_labelset(LABELSETS / "call_centre.yaml")
    assert labelset == LabelSet(
        name="call-centre QA",
        mode="multi-label",
        threshold=top(2),
        min_score=0.2,
        min_confidence=0.6,
        labels=(
            Label(
                "complaint",
                (
                    "complaint",
                    "a customer complaining on the phone about a late delivery",
                    "an unhappy caller asking for a refund",
                    "a frustrated customer explaining a problem to a support agent",
                ),
            ),
            Label(
                "abuse",
                ("abuse", "a customer swearing at the agent", "a caller shouting insults", "angry yelling on a phone call"),
                ("music",),
                top(0.5),
            ),
            Label(
                "emergency",
                ("emergency", "a panicked caller asking for an ambulance", "someone screaming for help on the phone"),
                threshold=score(0.35),
            ),
            Label(
                "hold music",
                ("hold music", "music playing while a caller waits on hold", "a looping jingle over a telephone line"),
                ("speech", "a person talking"),
            ),
            Label("silence", ("silence", "dead air on a phone line", "an open line with no one speaking"), ("hold music",)),
            Label(
                "praise",
                ("praise", "a customer thanking the agent warmly", "a happy caller saying the service was excellent"),
            ),
            Label("background chatter", ("background chatter",), ("music",)),
        ),
    )
    assert labelset.source == (LABELSETS / "call_centre.yaml").read_text(encoding="utf-8")
    assert labelset.threshold_for(labelset.labels[0]) == top(2)
    assert labelset.threshold_for(labelset.labels[1]) == top(0.5)
    assert labelset.threshold_for(labelset.labels[2]) == score(0.35)


def test_machine_monitoring_example_parses_exactly():
    labelset = load_labelset(LABELSETS / "machine_monitoring.yaml")
    assert labelset == LabelSet(
        name="machine monitoring",
        mode="exclusive",
        threshold=score(0.25),
        min_score=0.15,
        min_confidence=0.7,
        labels=(
            Label(
                "bearing squeal",
                ("bearing squeal", "high-pitched squealing of a worn bearing", "metallic screech from a rotating shaft"),
                ("alarm", "bird chirping"),
            ),
            Label(
                "belt slipping",
                ("belt slipping", "a rubber drive belt squeaking as it slips on a pulley", "a chirping fan belt"),
            ),
            Label(
                "motor overload",
                (
                    "motor overload",
                    "an electric motor straining and groaning under heavy load",
                    "a labouring motor slowing down",
                ),
                threshold=top(1),
            ),
            Label("grinding", ("grinding", "metal grinding against metal", "worn gears grinding"), ("music",)),
            Label("steady humming", ("steady humming",), ("an alarm",)),
            Label("alarm", ("alarm", "a loud repeating warning beep", "an industrial siren"), threshold=score(0.3)),
        ),
    )


def test_every_example_file_loads():
    files = sorted(LABELSETS.glob("*.yaml"))
    assert [f.name for f in files] == ["call_centre.yaml", "machine_monitoring.yaml"]
    for path in files:
        assert load_labelset(path).labels


def test_readme_format_block_parses():
    readme = (LABELSETS / "README.md").read_text(encoding="utf-8")
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    labelset = parse_labelset(block)
    assert [label.name for label in labelset.labels] == ["complaint", "humming", "abuse", "customer yelling"]
    assert labelset.labels[1].exclude == ("alarm",)
    assert labelset.labels[3] == Label("customer yelling", ("customer yelling",), ("music",), learned=True)
    assert not any(label.learned for label in labelset.labels[:3])
    assert labelset.labels[2] == Label(
        "abuse", ("abuse", "customer swearing at the agent", "insults"), ("music",), top(0.5)
    )
    rule = (
        "a window's score for a label is lowered by how much more it resembles an excluded concept: "
        "adjusted = cos(label) − max(0, max over exclusions of cos(excluded) − cos(label))."
    )
    assert rule in " ".join(readme.split())


# --- YAML details ------------------------------------------------------------------------------


def test_minimal_set_takes_the_defaults():
    labelset = parse_labelset("name: x\nlabels: [a, b]\n")
    assert labelset == LabelSet("x", (Label("a", ("a",)), Label("b", ("b",))))
    assert labelset.mode == "exclusive"
    assert labelset.threshold == DEFAULT_THRESHOLD == score(0.3)
    assert labelset.min_score is None and labelset.min_confidence is None


def test_aliases_single_strings_and_normalisation():
    text = """\
name: "  two   words "
mode: Multi-Label
labels:
  - name: "  Glass Breaking. "
    synonyms: "glass breaking"
    exclude: "“music”"
  - name: dog barking
    prompts: [dog barking!, a dog barking loudly, A dog barking loudly., "(a puppy yapping)"]
    not: [music, Music, speech]
"""
    labelset = parse_labelset(text)
    assert labelset.name == "two words"
    assert labelset.mode == "multi-label"
    assert labelset.labels == (
        Label("Glass Breaking", ("Glass Breaking",), ("music",)),
        Label("dog barking", ("dog barking", "a dog barking loudly", "a puppy yapping"), ("music", "speech")),
    )


def test_scalars_are_kept_as_written():
    labelset = parse_labelset("name: 2024\nlabels:\n  - 404\n  - yes\n  - '0.5'\n  - name: off\n    prompts: [1e3]\n")
    assert labelset.name == "2024"
    assert [label.name for label in labelset.labels] == ["404", "yes", "0.5", "off"]
    assert labelset.labels[3].prompts == ("off", "1e3")


def test_but_not_in_yaml_names_merges_with_not_key():
    text = "name: x\nlabels:\n  - name: humming but not alarm or siren\n    not: [siren, whistle]\n  - 机器声，但不是警报\n"
    assert parse_labelset(text).labels == (
        Label("humming", ("humming",), ("alarm", "siren", "whistle")),
        Label("机器声", ("机器声",), ("警报",)),
    )


def test_values_under_not_are_taken_as_written():
    labelset = parse_labelset("name: x\nlabels:\n  - name: a\n    not: rock and roll\n")
    assert labelset.labels[0].exclude == ("rock and roll",)


def test_threshold_forms_in_yaml():
    text = "name: x\nthreshold: 0.5%\nlabels:\n  - name: a\n    threshold: -0.1\n  - name: b\n    threshold: TOP 1 %\n  - c\n"
    labelset = parse_labelset(text)
    assert labelset.threshold == top(0.5)
    assert [labelset.threshold_for(label) for label in labelset.labels] == [score(-0.1), top(1), top(0.5)]


def test_integer_values_become_floats():
    labelset = parse_labelset("name: x\nthreshold: 1\nmin_score: 0\nmin_confidence: 1\nlabels: [a]\n")
    assert labelset.threshold == score(1.0) and isinstance(labelset.threshold.value, float)
    assert isinstance(labelset.min_score, float) and isinstance(labelset.min_confidence, float)
    assert labelset.to_dict()["min_score"] == 0.0


def test_load_labelset_uses_the_file_name_as_origin(tmp_path):
    path = tmp_path / "qa.yaml"
    path.write_text("name: x\nlabels: [a]\ntreshold: 0.3\n", encoding="utf-8")
    with pytest.raises(LabelSetError, match=r"^qa\.yaml:3: "):
        load_labelset(path)
    with pytest.raises(LabelSetError, match="does not exist"):
        load_labelset(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\nlabels: [a]\n".encode("latin-1"))
    with pytest.raises(LabelSetError, match="not UTF-8"):
        load_labelset(tmp_path / "latin1.yaml")


# --- inline ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("complaint, abuse", [("complaint", ()), ("abuse", ())]),
        (
            "complaint, abuse, machine humming but not alarm",
            [("complaint", ()), ("abuse", ()), ("machine humming", ("alarm",))],
        ),
        ("humming BUT NOT alarm or siren", [("humming", ("alarm", "siren"))]),
        ("humming but not alarm and siren / whistle", [("humming", ("alarm", "siren", "whistle"))]),
        ('"humming but not alarm, siren", dog', [("humming", ("alarm", "siren")), ("dog", ())]),
        ("humming, but not alarm, siren", [("humming", ("alarm",)), ("siren", ())]),
        ("humming but not alarm but not siren", [("humming", ("alarm", "siren"))]),
        ("humming but not alarm or Alarm.", [("humming", ("alarm",))]),
        ("狗叫，玻璃破碎、 警报", [("狗叫", ()), ("玻璃破碎", ()), ("警报", ())]),
        ("机器嗡嗡声，但不是警报、狗叫", [("机器嗡嗡声", ("警报",)), ("狗叫", ())]),
        ("机器嗡嗡声但不是警报或汽笛", [("机器嗡嗡声", ("警报", "汽笛"))]),
        ("“机器嗡嗡声，但不是警报、汽笛”，狗叫", [("机器嗡嗡声", ("警报", "汽笛")), ("狗叫", ())]),
        ("dog barking，狗叫 但不是 狼嚎", [("dog barking", ()), ("狗叫", ("狼嚎",))]),
        ("Siren, siren!, “siren”", [("Siren", ())]),
        ("butter, nothing but noise, rebut not", [("butter", ()), ("nothing but noise", ()), ("rebut not", ())]),
        ("humming but not alarm, humming but not alarm", [("humming", ("alarm",))]),
    ],
)
def test_inline_labels(text, expected):
    labelset = inline_labelset(text)
    assert [(label.name, label.exclude) for label in labelset.labels] == expected
    assert all(label.prompts == (label.name,) for label in labelset.labels)
    assert labelset.source == text
    assert labelset.name == ", ".join(name for name, _ in expected)


def test_a_quick_list_is_named_by_its_labels_within_a_line():
    assert inline_labelset("dog, siren but not alarm").name == "dog, siren"
    long = inline_labelset([f"label number {i}" for i in range(10)])
    assert len(long.name) <= 60 and long.name.startswith("label number 0, label number 1") and long.name.endswith("…")
    assert inline_labelset("dog", name="dogs").name == "dogs"


def test_inline_sequence_is_not_split_at_commas():
    labelset = inline_labelset(["humming in a workshop, steadily but not alarm, siren", "  Dog! "])
    assert labelset.labels == (
        Label("humming in a workshop, steadily", ("humming in a workshop, steadily",), ("alarm", "siren")),
        Label("Dog", ("Dog",)),
    )
    assert json.loads(labelset.source) == ["humming in a workshop, steadily but not alarm, siren", "  Dog! "]


def test_inline_options():
    labelset = inline_labelset(
        "a, b", name="quick", mode="multi-label", threshold="top 1%", min_score=0, min_confidence=0.7
    )
    assert labelset == LabelSet(
        "quick", (Label("a", ("a",)), Label("b", ("b",))), "multi-label", top(1), 0.0, 0.7
    )
    assert inline_labelset("a", threshold=0.2).threshold == score(0.2)
    assert inline_labelset("a", threshold="0.2").threshold == score(0.2)


def test_inline_equals_the_same_set_in_yaml():
    inline = inline_labelset("complaint, humming but not alarm", name="x")
    yaml_set = parse_labelset("name: x\nlabels:\n  - complaint\n  - name: humming\n    not: alarm\n")
    assert inline == yaml_set
    assert inline.digest() == yaml_set.digest()
    assert inline.source != yaml_set.source


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (" , ，", {}, 'No labels given: type one or more labels separated by commas, e.g. "dog barking, glass breaking".'),
        ("but not alarm", {}, 'A label ("but not alarm") has nothing before "but not"; write the label first, as in "humming but not alarm".'),
        ("但不是警报", {}, 'A label ("但不是警报") has nothing before "but not"; write the label first, as in "humming but not alarm".'),
        ("humming but not", {}, "Label 'humming' says \"but not\" with nothing after it; name what to exclude."),
        ("humming but not , dog", {}, "Label 'humming' says \"but not\" with nothing after it; name what to exclude."),
        ("hum but not Hum.", {}, "Label 'hum' excludes itself; remove the \"but not\" part or rename the label."),
        ("a but not b, A but not c", {}, "Label 'A' is given twice with different exclusions; give it once."),
        ("x" * 201, {}, f'Label "{"x" * 40}…" is longer than 200 characters; shorten it.'),
        (["a", 3], {}, "Labels must be text, but one was int."),
        ("a", {"mode": "multi"}, "Unknown mode 'multi'; use exclusive (one winner per window) or multi-label (every label above its threshold)."),
        ("a", {"threshold": "high"}, f'Threshold "high" is not understood; write {FORMS}.'),
        ("a", {"min_confidence": 1.5}, "min_confidence must be a number between 0 and 1, not 1.5."),
        ("a", {"min_score": True}, "min_score must be a number between -1 and 1, not True."),
    ],
)
def test_inline_errors(labels, kwargs, message):
    with pytest.raises(LabelSetError) as caught:
        inline_labelset(labels, **kwargs)
    assert str(caught.value) == message


# --- thresholds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "text"),
    [
        (0.3, score(0.3), "0.3"),
        (0, score(0.0), "0"),
        (1, score(1.0), "1"),
        (-1, score(-1.0), "-1"),
        ("0.25", score(0.25), "0.25"),
        (" -0.05 ", score(-0.05), "-0.05"),
        ("top 0.5%", top(0.5), "top 0.5%"),
        ("top 1 %", top(1.0), "top 1%"),
        ("0.5%", top(0.5), "top 0.5%"),
        ("TOP   2％", top(2.0), "top 2%"),
        ("top100%", top(100.0), "top 100%"),
        ("top .25%", top(0.25), "top 0.25%"),
        (top(3), top(3), "top 3%"),
    ],
)
def test_threshold_parse(value, expected, text):
    parsed = Threshold.parse(value)
    assert parsed == expected
    assert str(parsed) == text
    assert Threshold.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("high", f'Threshold "high" is not understood; write {FORMS}.'),
        ("", f'Threshold "" is not understood; write {FORMS}.'),
        ("nan", f'Threshold "nan" is not understood; write {FORMS}.'),
        ("top 1", 'Threshold "top 1" needs a percent sign: write "top 1%".'),
        (True, f"Threshold True is not understood; write {FORMS}."),
        (None, f"Threshold None is not understood; write {FORMS}."),
        ([0.3], f"Threshold [0.3] is not understood; write {FORMS}."),
        (5, 'A score threshold is a cosine similarity between -1 and 1, and 5 is outside that range (for the top 5% of the archive write "top 5%").'),
        (-1.5, "A score threshold is a cosine similarity between -1 and 1, and -1.5 is outside that range."),
        ("top 0%", "A top-percent threshold must be above 0% and at most 100%, not 0%."),
        ("top 100.5%", "A top-percent threshold must be above 0% and at most 100%, not 100.5%."),
        ("-2%", "A top-percent threshold must be above 0% and at most 100%, not -2%."),
    ],
)
def test_threshold_parse_errors(value, message):
    with pytest.raises(ValueError) as caught:
        Threshold.parse(value)
    assert str(caught.value) == message


def test_threshold_constructor_checks_too():
    with pytest.raises(ValueError, match="kind"):
        Threshold("percent", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a number"):
        Threshold("score", "0.3")  # type: ignore[arg-type]
    assert Threshold("score", 1) == Threshold("score", 1.0)


# --- digest and plain data ---------------------------------------------------------------------

BASE = """\
name: qa
mode: multi-label
threshold: top 1%
labels:
  - complaint
  - name: abuse
    prompts: [swearing, insults]
    not: music
    threshold: 0.2
"""


def test_digest_ignores_comments_whitespace_key_order_and_spelled_out_defaults():
    reordered = """\
# a comment
labels:
  -   complaint          # trailing comment
  - threshold: 0.20
    not: [ music ]
    synonyms:
      - swearing
      - insults
    name: abuse
mode: multi-label
name: qa
threshold: "top 1 %"
"""
    flow = '{name: qa, mode: multi-label, threshold: top 1%, labels: [complaint, {name: "abuse.", prompts: [swearing, insults, Swearing], not: music, threshold: 0.2}]}'
    base = parse_labelset(BASE)
    assert parse_labelset(reordered).digest() == base.digest()
    assert parse_labelset(flow).digest() == base.digest()
    assert parse_labelset(reordered) == base
    assert parse_labelset("name: x\nlabels: [a]\n").digest() == parse_labelset(
        "name: x\nmode: exclusive\nthreshold: 0.3\nlabels: [a]\n"
    ).digest()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("name: qa", "name: qa2"),
        ("mode: multi-label", "mode: exclusive"),
        ("threshold: top 1%", "threshold: 0.3"),
        ("  - complaint", "  - Complaint"),
        ("  - complaint", "  - complaint but not music"),
        ("prompts: [swearing, insults]", "prompts: [swearing]"),
        ("prompts: [swearing, insults]", "prompts: [insults, swearing]"),
        ("not: music", "not: [music, speech]"),
        ("threshold: 0.2", "threshold: top 0.2%"),
        ("labels:\n", "min_score: 0.1\nlabels:\n"),
        ("labels:\n", "min_confidence: 0.5\nlabels:\n"),
    ],
)
def test_digest_changes_with_content(old, new):
    assert old in BASE
    changed = parse_labelset(BASE.replace(old, new, 1))
    assert changed.digest() != parse_labelset(BASE).digest()


def test_digest_is_sha256_of_canonical_json():
    import hashlib

    labelset = parse_labelset(BASE)
    canonical = json.dumps(labelset.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert labelset.digest() == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert len(labelset.digest()) == 64


def test_to_dict_is_plain_data_and_round_trips():
    labelset = parse_labelset(BASE)
    data = labelset.to_dict()
    assert data == {
        "name": "qa",
        "mode": "multi-label",
        "threshold": {"kind": "top_percent", "value": 1.0},
        "min_score": None,
        "min_confidence": None,
        "labels": [
            {"name": "complaint", "prompts": ["complaint"], "exclude": [], "threshold": None},
            {
                "name": "abuse",
                "prompts": ["abuse", "swearing", "insults"],
                "exclude": ["music"],
                "threshold": {"kind": "score", "value": 0.2},
            },
        ],
    }
    assert json.loads(json.dumps(data)) == data
    restored = LabelSet.from_dict(json.loads(json.dumps(data)), source=labelset.source)
    assert restored == labelset and restored.digest() == labelset.digest() and restored.source == BASE


# --- validation: every error names its line ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # not valid YAML (yaml's own line)
        ("name: x\nlabels: [a\nmode: exclusive\n", "t.yaml:3: Not valid YAML: expected ',' or ']', but got ':'."),
        ("name: x\nlabels:\n  - a\n - b\n", "t.yaml:4: Not valid YAML: expected <block end>, but found '<block sequence start>'."),
        ("name: x\n\tlabels: [a]\n", "t.yaml:2: Not valid YAML: found character '\\t' that cannot start any token."),
        ("name: x\nlabels: [a]\nmode: \x07\n", "t.yaml:3: Not valid YAML: the control character U+0007 is not allowed."),
        ("name: x\nlabels: [a]\n---\nname: y\n", "t.yaml:3: Not valid YAML: but found another document."),
        # the top level
        ("", "t.yaml:1: The label set is empty; it needs at least a name and a list of labels."),
        ("# only a comment\n", "t.yaml:1: The label set is empty; it needs at least a name and a list of labels."),
        ("# list\n- a\n- b\n", "t.yaml:2: The label set must be a mapping with keys such as name: and labels:, not a list."),
        ("\ncomplaint, abuse\n", "t.yaml:2: The label set must be a mapping with keys such as name: and labels:, not the single value 'complaint, abuse'."),
        # missing or empty name / labels
        ("# c\nmode: exclusive\nlabels: [a]\n", "t.yaml:2: The label set has no name; add a line such as name: call-centre QA."),
        ("name: x\nmode: exclusive\n", "t.yaml:1: The label set has no labels; add labels: followed by one - label per line."),
        ("mode: exclusive\nname:\nlabels: [a]\n", "t.yaml:2: The label set's name is empty."),
        ("labels: [a]\nname: '  '\n", "t.yaml:2: The label set's name is empty."),
        ("name: x\nlabels:\n", "t.yaml:2: labels is empty; list at least one label, one - label per line."),
        ("name: x\nlabels: []\n", "t.yaml:2: labels is empty; list at least one label, one - label per line."),
        # unknown and repeated keys
        (
            "name: x\nlabels: [a]\ntreshold: 0.3\n",
            "t.yaml:3: Unknown key 'treshold' in the label set (did you mean threshold?); "
            "the allowed keys are name, mode, threshold, min_score, min_confidence, labels.",
        ),
        (
            "name: x\nlabels:\n  - name: a\n    colour: red\n",
            "t.yaml:4: Unknown key 'colour' in label 1; "
            "the allowed keys are name, learned, prompts, synonyms, not, exclude, threshold.",
        ),
        (
            "name: x\nlabels: [a]\ndescription: hello\n",
            "t.yaml:3: Unknown key 'description' in the label set; "
            "the allowed keys are name, mode, threshold, min_score, min_confidence, labels.",
        ),
        (
            "name: x\nlabels:\n  - a\n  - name: b\n    promts: [c]\n",
            "t.yaml:5: Unknown key 'promts' in label 2 (did you mean prompts?); "
            "the allowed keys are name, learned, prompts, synonyms, not, exclude, threshold.",
        ),
        (
            "name: x\nlabels:\n  - name: b\n    but_not: c\n",
            "t.yaml:4: Unknown key 'but_not' in label 1 (did you mean not?); "
            "the allowed keys are name, learned, prompts, synonyms, not, exclude, threshold.",
        ),
        ("name: x\nlabels: [a]\nname: y\n", "t.yaml:3: In the label set, 'name' appears twice; give it once."),
        (
            "name: x\nlabels:\n  - name: a\n    prompts: b\n    synonyms: c\n",
            "t.yaml:5: In label 1, 'synonyms' and 'prompts' mean the same thing, so give only one of them.",
        ),
        ("name: x\nlabels: [a]\n[mode]: exclusive\n", "t.yaml:3: A key in the label set must be a plain word, not a list."),
        # wrong types
        ("name: [x]\nlabels: [a]\n", "t.yaml:1: The label set's name must be text, not a list."),
        ("name: x\nlabels: complaint, abuse\n", "t.yaml:2: labels must be a list (one - label per line), not the single value 'complaint, abuse'."),
        ("name: x\nlabels: {a: b}\n", "t.yaml:2: labels must be a list (one - label per line), not a mapping."),
        ("name: x\nlabels:\n  - a\n  - [b, c]\n", "t.yaml:4: Label 2 must be a name or a mapping with name:, not a list."),
        ("name: x\nlabels:\n  - a\n  -\n", "t.yaml:4: Label 2 is empty."),
        ("name: x\nlabels:\n  - a\n  - threshold: 0.2\n", "t.yaml:4: Label 2 has no name; add name: followed by the label."),
        ("name: x\nlabels:\n  - name: {a: b}\n", "t.yaml:3: Label 1 must be text, not a mapping."),
        ("name: x\nlabels:\n  - name: a\n    prompts: {b: c}\n", "t.yaml:4: The prompts of 'a' must be text, not a mapping."),
        ("name: x\nlabels:\n  - name: a\n    not:\n      - [b]\n", "t.yaml:5: The exclusions (not:) of 'a' must be text, not a list."),
        ("name: x\nlabels: [a]\nmin_score: low\n", "t.yaml:3: min_score must be a cosine score between -1 and 1, not 'low'."),
        ("name: x\nlabels: [a]\nmin_score:\n", "t.yaml:3: min_score must be a cosine score between -1 and 1, not empty."),
        ("name: x\nlabels: [a]\nmin_confidence: '0.5'\n", "t.yaml:3: min_confidence must be a confidence between 0 and 1, not '0.5'."),
        # unknown mode
        (
            "name: x\nlabels: [a]\nmode: multi_label\n",
            "t.yaml:3: Unknown mode 'multi_label'; use exclusive (one winner per window) or multi-label (every label above its threshold).",
        ),
        # bad thresholds
        ("name: x\nlabels: [a]\nthreshold: high\n", f't.yaml:3: Threshold "high" is not understood; write {FORMS}.'),
        ("name: x\nlabels: [a]\nthreshold:\n", f"t.yaml:3: A threshold must be {FORMS}."),
        ("name: x\nlabels: [a]\nthreshold: [0.3]\n", f"t.yaml:3: A threshold must be {FORMS}."),
        ("name: x\nlabels: [a]\nthreshold: top 5\n", f't.yaml:3: Threshold "top 5" needs a percent sign: write "top 5%"; a threshold is {FORMS}.'),
        (
            "name: x\nlabels: [a]\nthreshold: 30\n",
            "t.yaml:3: A score threshold is a cosine similarity between -1 and 1, and 30 is outside that range "
            f'(for the top 30% of the archive write "top 30%"); a threshold is {FORMS}.',
        ),
        (
            "name: x\nlabels:\n  - a\n  - name: b\n    threshold: top 0%\n",
            f"t.yaml:5: A top-percent threshold must be above 0% and at most 100%, not 0%; a threshold is {FORMS}.",
        ),
        # min_confidence / min_score outside their range
        ("name: x\nlabels: [a]\nmin_confidence: 70\n", "t.yaml:3: min_confidence must be a confidence between 0 and 1, and 70 is outside that range."),
        ("name: x\nlabels: [a]\nmin_confidence: -0.1\n", "t.yaml:3: min_confidence must be a confidence between 0 and 1, and -0.1 is outside that range."),
        ("name: x\nlabels: [a]\nmin_score: 1.5\n", "t.yaml:3: min_score must be a cosine score between -1 and 1, and 1.5 is outside that range."),
        # duplicate labels after normalisation
        ("name: x\nlabels:\n  - Siren\n  - dog\n  - siren.\n", "t.yaml:5: Label 'siren' appears twice (first on line 3); give each label once."),
        (
            "name: x\nlabels:\n  - siren\n  - name: “Siren”\n    prompts: [a loud siren]\n",
            "t.yaml:4: Label 'Siren' appears twice (first on line 3); give each label once.",
        ),
        ("name: x\nlabels:\n  - humming but not alarm\n  - humming\n", "t.yaml:4: Label 'humming' appears twice (first on line 3); give each label once."),
        # a label that excludes itself
        ("name: x\nlabels:\n  - name: alarm\n    not: [music, Alarm!]\n", "t.yaml:4: Label 'alarm' excludes 'Alarm', which is its own name or prompt; remove one of them."),
        (
            "name: x\nlabels:\n  - name: alarm\n    prompts: [a siren]\n    not:\n      - music\n      - A siren\n",
            "t.yaml:7: Label 'alarm' excludes 'A siren', which is its own name or prompt; remove one of them.",
        ),
        ("name: x\nlabels:\n  - a\n  - hum but not hum\n", "t.yaml:4: Label 'hum' excludes itself; remove the \"but not\" part or rename the label."),
        # empty prompts and empty "but not"
        ("name: x\nlabels:\n  - name: a\n    prompts: []\n", "t.yaml:4: The prompts of 'a' is an empty list; remove the key or list at least one."),
        ("name: x\nlabels:\n  - name: a\n    prompts:\n", "t.yaml:4: The prompts of 'a' is empty."),
        ("name: x\nlabels:\n  - name: a\n    prompts: [b, '...']\n", "t.yaml:4: A prompt of 'a' is empty."),
        ("name: x\nlabels:\n  - name: a\n    prompts:\n      - b\n      - ''\n", "t.yaml:6: The prompts of 'a' is empty."),
        ("name: x\nlabels:\n  - name: a\n    not: []\n", "t.yaml:4: The exclusions (not:) of 'a' is an empty list; remove the key or list at least one."),
        ("name: x\nlabels:\n  - '!!'\n", "t.yaml:3: Label 1 is empty."),
        ("name: x\nlabels:\n  - a\n  - humming but not\n", "t.yaml:4: Label 'humming' says \"but not\" with nothing after it; name what to exclude."),
        (
            "name: x\nlabels:\n  - but not alarm\n",
            't.yaml:3: Label 1 ("but not alarm") has nothing before "but not"; write the label first, as in "humming but not alarm".',
        ),
        # labels longer than 200 characters
        ("name: x\nlabels:\n  - a\n  - " + "x" * 201 + "\n", f't.yaml:4: Label "{"x" * 40}…" is longer than 200 characters; shorten it.'),
        (
            "name: x\nlabels:\n  - name: a\n    prompts:\n      - b\n      - " + "y" * 201 + "\n",
            f't.yaml:6: Label "{"y" * 40}…" is longer than 200 characters; shorten it.',
        ),
        (
            "name: x\nlabels:\n  - name: a\n    not: " + "z" * 201 + "\n",
            f't.yaml:4: Label "{"z" * 40}…" is longer than 200 characters; shorten it.',
        ),
    ],
)
def test_validation_errors_name_the_line(text, message):
    with pytest.raises(LabelSetError) as caught:
        parse_labelset(text, origin="t.yaml")
    assert str(caught.value) == message


def test_label_set_error_is_a_query_error_with_default_origin():
    with pytest.raises(QueryError, match=r"^<label set>:1: "):
        parse_labelset("- a\n")


def test_exactly_200_characters_is_fine():
    assert parse_labelset("name: x\nlabels:\n  - " + "x" * 200 + "\n").labels[0].name == "x" * 200
