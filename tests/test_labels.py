"""Label lists typed by people, in English, Chinese or both, become one clean list."""

from __future__ import annotations

import pytest

from indexer.errors import LabelError
from indexer.label_names import MAX_LABEL_LENGTH, NO_LABELS_MESSAGE, parse_labels


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dog barking, glass breaking", ["dog barking", "glass breaking"]),
        ("dog barking,glass breaking,", ["dog barking", "glass breaking"]),
        ("狗叫，玻璃破碎、 警报", ["狗叫", "玻璃破碎", "警报"]),
        ("狗叫；玻璃破碎;警报", ["狗叫", "玻璃破碎", "警报"]),
        ("dog barking，狗叫、 siren; 警报", ["dog barking", "狗叫", "siren", "警报"]),
        ("dog barking\nglass breaking\r\nsiren", ["dog barking", "glass breaking", "siren"]),
        ("  dog    barking  ,\t glass \u3000 breaking ", ["dog barking", "glass breaking"]),
        (
            '"machine humming steadily in a workshop, not an alarm", siren',
            ["machine humming steadily in a workshop, not an alarm", "siren"],
        ),
        (
            "“machine humming steadily in a workshop, not an alarm”，狗叫",
            ["machine humming steadily in a workshop, not an alarm", "狗叫"],
        ),
        ("“机器嗡嗡声，不是警报”、警报", ["机器嗡嗡声，不是警报", "警报"]),
        ('"unclosed, quote', ["unclosed", "quote"]),
        ("rock 'n' roll, customer's complaint", ["rock 'n' roll", "customer's complaint"]),
        ("Dog barking., glass breaking!", ["Dog barking", "glass breaking"]),
        ("狗叫。, 警报！, 有人吗？", ["狗叫", "警报", "有人吗"]),
        ("「狗叫」、『警报』、（笑声）", ["狗叫", "警报", "笑声"]),
        ("'dog barking', ‘siren’", ["dog barking", "siren"]),
        ("dog barking (loud)., (quiet) hum", ["dog barking (loud)", "(quiet) hum"]),
        ("speech: calm, speech: angry", ["speech: calm", "speech: angry"]),
        ("- dog\n- cat\n• bird", ["dog", "cat", "bird"]),
        ("dog barking, Dog Barking, DOG  BARKING., “dog barking”", ["dog barking"]),
        ("Siren, siren!, 狗叫, 狗叫。", ["Siren", "狗叫"]),
        ("a, , ,, b", ["a", "b"]),
    ],
)
def test_text_is_split_and_normalised(text, expected):
    assert parse_labels(text) == expected


def test_sequence_is_taken_as_already_split():
    labels = ["machine humming, not an alarm", "  Siren! ", "siren", "“狗叫”", ""]
    assert parse_labels(labels) == ["machine humming, not an alarm", "Siren", "狗叫"]


def test_tuple_works_like_list():
    assert parse_labels(("dog", "cat")) == ["dog", "cat"]


def test_first_spelling_and_order_are_kept():
    assert parse_labels("Glass Breaking, dog, glass breaking., DOG") == ["Glass Breaking", "dog"]


def test_full_width_letters_count_as_duplicates():
    assert parse_labels("Ｄｏｇ, dog") == ["Ｄｏｇ"]


@pytest.mark.parametrize("text", ["", "   ", ", ，、;\n", "。。。", '""', [], ["", "  ", "!"]])
def test_no_labels_is_an_error(text):
    with pytest.raises(LabelError) as info:
        parse_labels(text)
    assert str(info.value) == NO_LABELS_MESSAGE
    assert NO_LABELS_MESSAGE == (
        'No labels given: type one or more labels separated by commas, e.g. "dog barking, glass breaking".'
    )


def test_label_of_maximum_length_is_fine():
    label = "a" * MAX_LABEL_LENGTH
    assert parse_labels(f"{label}, b") == [label, "b"]


def test_too_long_label_is_an_error():
    with pytest.raises(LabelError, match="longer than 200 characters"):
        parse_labels("dog, " + "x" * (MAX_LABEL_LENGTH + 1))


def test_length_counts_after_normalisation():
    label = "  " + "a" * MAX_LABEL_LENGTH + " ... "
    assert parse_labels([label]) == ["a" * MAX_LABEL_LENGTH]


def test_non_text_item_is_an_error():
    with pytest.raises(LabelError, match="must be text"):
        parse_labels(["dog", 3])  # type: ignore[list-item]
