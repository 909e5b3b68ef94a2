"""Inputs that took the machine's memory or the clock are refused in one sentence, early, with
nothing half-done (issue 20, items 7 and 9-12): a wide metadata CSV, a costly ``--where`` regex,
a label of 60,000 "(", a label set multiplied by YAML aliases, a million-row marks CSV. The
crafted inputs live in ``tests.hostile_inputs``."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer import Archive
from indexer.errors import FilterError, LabelError, LabelSetError, MarkError, MetadataError
from tests import hostile_inputs as hostile
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def small(tmp_path):
    drop = tmp_path / "drop"
    write_sequence(drop / "a.wav", [(440, 20)])
    write_sequence(drop / "b.wav", [(1200, 20)])
    archive = Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True)
    archive.index([drop])
    yield archive, drop
    archive.close()


@pytest.fixture()
def cli(monkeypatch, small):
    """The CLI in this process, with the fake encoder wherever a model would load (the test's own
    archive lets go of its catalog first, as a second process would find it)."""
    from indexer.cli.main import cli as command

    monkeypatch.setattr("indexer.model.loading.load_encoder", lambda cfg: FakeEncoder())

    def run(*args):
        small[0].catalog.yield_lock()
        return CliRunner().invoke(command, [str(a) for a in args])

    return run


def _one_sentence(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    message = result.output.strip().removeprefix("Error: ")
    assert "\n" not in message and len(message) < 400, message
    for word in words:
        assert word in message, message


# --- 7. metadata columns ---------------------------------------------------------------------


PEAK_OF_AN_IMPORT = """
import resource, sys
sys.path.insert(0, '.')
from pathlib import Path
from indexer import Archive
from indexer.errors import MetadataError
from tests import hostile_inputs
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder
tmp = Path(sys.argv[1])
write_sequence(tmp / 'drop' / 'a.wav', [(440, 10)])
archive = Archive.open(tmp / 'arch', encoder=FakeEncoder(), create=True)
archive.index([tmp / 'drop'])
csv = hostile_inputs.wide_metadata_csv(tmp / 'wide.csv', int(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # the old import took 22.9 GB
try:
    archive.catalog.import_metadata(csv)
    print('imported')
except MetadataError as exc:
    print(exc)
except Exception as exc:
    print('failed:', type(exc).__name__)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.parametrize("columns", [4_000, 20_000])
def test_a_wide_metadata_csv_is_refused_from_its_header_before_it_takes_memory(tmp_path, columns):
    out = subprocess.run([sys.executable, "-c", PEAK_OF_AN_IMPORT, str(tmp_path), str(columns)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    message, grown_mb = out.stdout.strip().splitlines()
    assert message == (f"Metadata CSV wide.csv has {columns:,} columns; an archive keeps at most 256 metadata "
                       "columns besides the one naming the recording, so remove columns from the CSV."), out.stderr
    assert int(grown_mb) < 50  # 4,000 columns raised the peak by 1.4 GB, 20,000 by 22.9 GB


def test_the_column_limit_holds_across_imports_and_a_refusal_changes_nothing(small):
    from indexer.archive.metadata import MAX_METADATA_COLUMNS

    archive, drop = small
    assert archive.catalog.import_metadata(hostile.wide_metadata_csv(drop / "full.csv", MAX_METADATA_COLUMNS + 1)) == 1
    assert len(archive.catalog.metadata_columns()) == MAX_METADATA_COLUMNS
    generation = archive.catalog.generation()
    (drop / "more.csv").write_text("file,c0,extra\na.wav,2,3\n")
    with pytest.raises(MetadataError, match="would give this archive 257 metadata columns; an archive keeps at most 256"):
        archive.catalog.import_metadata(drop / "more.csv")
    assert len(archive.catalog.metadata_columns()) == MAX_METADATA_COLUMNS and archive.catalog.generation() == generation
    (drop / "same.csv").write_text("file,c0\nb.wav,7\n")  # columns it has already: fine
    assert archive.catalog.import_metadata(drop / "same.csv") == 1


def test_a_header_line_with_no_end_and_a_row_past_a_megabyte_are_one_sentence(small):
    archive, drop = small
    (drop / "endless.csv").write_text("file," + "x" * 200_000)
    with pytest.raises(MetadataError, match="header line longer than 128 KB"):
        archive.catalog.import_metadata(drop / "endless.csv")
    (drop / "quoted.csv").write_text('"fi\nle",' + ",".join(f"c{i}" for i in range(300)) + "\na.wav\n")
    with pytest.raises(MetadataError, match="has 301 columns"):  # a line break inside quotes hides nothing
        archive.catalog.import_metadata(drop / "quoted.csv")
    (drop / "long.csv").write_text("file,notes\na.wav," + "y" * 1_100_000 + "\nb.wav,short\n")
    with pytest.raises(MetadataError, match="has a row longer than 1 MB"):
        archive.catalog.import_metadata(drop / "long.csv")
    (drop / "semicolons.csv").write_text("file;" + ";".join(f"c{i}" for i in range(300)) + "\na.wav;1\n")
    with pytest.raises(MetadataError, match="has 301 columns"):
        archive.catalog.import_metadata(drop / "semicolons.csv")
    assert archive.catalog.metadata_columns() == []


def test_index_refuses_a_wide_csv_before_it_creates_the_archive(cli, small, tmp_path):
    _, drop = small
    csv = hostile.wide_metadata_csv(tmp_path / "wide.csv")
    result = cli("index", drop, "--archive", tmp_path / "new", "--model", "fake", "--metadata", csv)
    _one_sentence(result, "has 20,000 columns", "at most 256")
    assert not (tmp_path / "new").exists()


# --- 9. regular expressions and the time limit -------------------------------------------------


@pytest.mark.parametrize("where", hostile.HOSTILE_REGEX_FILTERS)
def test_every_costly_pattern_is_refused_before_it_runs(small, where):
    from indexer.search.filtering import SearchFilters
    from indexer.search.ranking import allowed_window_ids

    archive, _ = small
    with pytest.raises(FilterError) as info:
        allowed_window_ids(archive, SearchFilters(where=where))
    message = str(info.value)  # one of ours, not RE2's "pattern too large" after it compiled
    assert "\n" not in message and ("at most" in message or "text constant" in message), message


@pytest.mark.parametrize("where, size", [
    ("regexp_matches(path, '^/data/2024-0[1-6]/.*[.]wav$')", 21),
    (r"file_name ~ '\d{4}-\d{2}-\d{2}'", 10),
    ("path SIMILAR TO '.*(?i:call|CALL).{0,100}'", 109),
    ("regexp_extract(path, '((.{0,5}){0,10}){0,10}') = ''", 500),
    ("regexp_matches(path, '(?P<name>[a-z]{2,3})[0-9]{1,5}', 'i')", 8),
])
def test_ordinary_patterns_pass_and_are_measured_as_written_out(small, where, size):
    from indexer.search.filtering import SearchFilters
    from indexer.search.ranking import allowed_window_ids
    from indexer.search.where_regex import pattern_size

    archive, _ = small
    assert allowed_window_ids(archive, SearchFilters(where=where)) is not None
    pattern = where.split("'")[1]
    assert pattern_size(pattern) == size


def test_the_cli_refuses_the_566_character_pattern_in_one_sentence(cli, small):
    archive, _ = small
    where = f"regexp_matches(path, '{hostile.nested_repeats_regex(566)}')"
    _one_sentence(cli("search", "tone 440", "--archive", archive.directory, "--model", "fake", "--where", where),
                  "at most 256 characters")
    where = "regexp_matches(path, '((.{0,10}){0,10}){0,10}')"
    _one_sentence(cli("audit", "run", "--labels", "tone 440, tone 1200", "--archive", archive.directory, "--model", "fake",
                      "--where", where), "1,000 characters with their counted repeats written out")


def _many_recordings(archive, count: int) -> None:
    """``count`` more recordings (each with a window) written into the catalog directly."""
    con = archive.catalog.con
    con.execute(
        "INSERT INTO recordings SELECT r.* REPLACE (r.id + 10 + g.i AS id, r.path || '/call-' || g.i::VARCHAR"
        " || '-agent-smith-2024-05-01-site-leeds.wav' AS path) FROM recordings r, range(?) g(i) WHERE r.id = 1", [count])
    con.execute(
        "INSERT INTO windows SELECT w.* REPLACE (1000000 + g.i AS id, 11 + g.i AS recording_id) FROM windows w, range(?) g(i)"
        " WHERE w.id = (SELECT min(id) FROM windows)", [count])
    archive.catalog._refresh_view()


def test_a_filter_running_past_its_time_limit_is_stopped_with_one_sentence(small, monkeypatch):
    import time

    from indexer.search import filtering
    from indexer.search.filtering import SearchFilters
    from indexer.search.ranking import allowed_window_ids

    archive, _ = small
    _many_recordings(archive, 300_000)
    monkeypatch.setattr(filtering, "FILTER_TIME_LIMIT_S", 0.05)
    where = "regexp_matches(path, '((.{0,5}){0,10}){0,9}#')"  # allowed, ≈ 20 µs a row: seconds here
    memory = archive.catalog.one("SELECT current_setting('memory_limit')")[0]
    started = time.perf_counter()
    with pytest.raises(FilterError, match=r"^The filter ran longer than 0.05 s and was stopped; narrow it"):
        allowed_window_ids(archive, SearchFilters(where=where))
    assert time.perf_counter() - started < 20
    assert archive.catalog.one("SELECT current_setting('memory_limit')")[0] == memory  # lifted again
    monkeypatch.setattr(filtering, "FILTER_TIME_LIMIT_S", 60.0)
    assert len(allowed_window_ids(archive, SearchFilters(where="path LIKE '%call-7-%'"))) == 1  # the connection works


def test_a_timer_that_fires_after_the_query_interrupts_nothing(small):
    from indexer.search.filtering import _time_limit

    archive, _ = small
    con = archive.catalog.con
    with _time_limit(con, 0.001):
        con.execute("SELECT 1").fetchall()
    import time

    time.sleep(0.05)
    assert con.execute("SELECT count(*) FROM range(1000000)").fetchall() == [(1_000_000,)]


# --- 10. label text --------------------------------------------------------------------------


def _reference_normalise(label: str) -> str:
    """The normaliser as it was (quadratic), to prove the linear one peels exactly the same."""
    from indexer.label_names import _CLOSERS, EDGE_PUNCTUATION, PAIRS, SYMMETRIC_QUOTES

    def matching_close(text: str) -> int:
        depth = 0
        for index, ch in enumerate(text):
            depth += (ch == text[0]) - (ch == PAIRS[text[0]])
            if depth == 0:
                return index
        return -1

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
        elif first in PAIRS and matching_close(label) == len(label) - 1:
            label = label[1:-1]
        elif first in PAIRS and PAIRS[first] not in label[1:]:
            label = label[1:]
        elif last in _CLOSERS and _CLOSERS[last] not in label[:-1]:
            label = label[:-1]
        else:
            break
    return label


def test_the_linear_normaliser_peels_exactly_as_before():
    from indexer.label_names import normalise_label

    alphabet = list("()[]{}<>（）“”‘’«»\"'`＂ .,;:!?-。xab\t")
    rng = random.Random(0)
    for _ in range(30_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        assert normalise_label(text) == _reference_normalise(text), text


@pytest.mark.parametrize("text", hostile.HOSTILE_LABELS, ids=lambda t: f"{t[:3]!r}x{len(t)}")
def test_label_text_past_the_limit_is_refused_everywhere_never_turned_into_another_label(text):
    from indexer.audit.labelset import inline_labelset
    from indexer.audit.labelset_yaml import parse_labelset
    from indexer.label_names import parse_labels
    from indexer.learning.marks import clean_label

    sentence = "is longer than 200 characters; shorten it."
    for attempt, error in ((lambda: parse_labels(text), LabelError), (lambda: parse_labels([text, "dog"]), LabelError),
                           (lambda: inline_labelset(text), LabelSetError), (lambda: inline_labelset([text]), LabelSetError),
                           (lambda: clean_label(text), MarkError)):
        with pytest.raises(error, match=sentence):
            attempt()
    yaml_text = f"name: s\nlabels:\n  - name: ok\n    prompts:\n      - '{text}'\n"
    with pytest.raises(LabelSetError, match="^<label set>:5: .*" + sentence):
        parse_labelset(yaml_text)


def test_label_mark_refuses_the_60000_paren_label_and_marks_nothing(cli, small):
    import time

    archive, _ = small
    window = int(archive.catalog.all_window_ids()[0])
    started = time.perf_counter()
    result = cli("label", "mark", hostile.LEFT_PARENS_LABEL, "--window", window, "--archive", archive.directory)
    _one_sentence(result, 'Label "((((', "longer than 200 characters")
    assert time.perf_counter() - started < 30  # it took 92 s, and marked the label "x"
    assert archive.catalog.one("SELECT count(*) FROM label_marks")[0] == 0
    result = cli("audit", "run", "--labels", f"dog, {hostile.LEFT_PARENS_LABEL}", "--archive", archive.directory, "--model", "fake")
    _one_sentence(result, "longer than 200 characters")
    assert archive.catalog.one("SELECT count(*) FROM audit_runs")[0] == 0


def test_too_many_labels_are_one_sentence_in_every_form():
    from indexer.audit.labelset import inline_labelset
    from indexer.label_names import parse_labels

    many = ", ".join(f"label {i}" for i in range(1_001))
    with pytest.raises(LabelError, match="More than 1,000 labels were given"):
        parse_labels(many)
    with pytest.raises(LabelSetError, match="More than 1,000 labels were given"):
        inline_labelset(many)
    with pytest.raises(LabelError, match="a list is at most 200,000"):
        parse_labels("a," * 100_001)
    assert len(inline_labelset(", ".join(f"label {i}" for i in range(1_000))).labels) == 1_000


# --- 11. label sets: labels, prompts, aliases --------------------------------------------------


def test_an_alias_bomb_is_refused_before_its_shared_list_is_read_into_each_label(monkeypatch):
    from indexer.audit import labelset_yaml

    cleaned = []
    real = labelset_yaml.clean_text
    monkeypatch.setattr(labelset_yaml, "clean_text", lambda text, what: cleaned.append(text) or real(text, what))
    with pytest.raises(LabelSetError, match="^<label set>:3: The label set has 2,000 labels; a set holds at most 1,000"):
        labelset_yaml.parse_labelset(hostile.alias_bomb_labelset())
    with pytest.raises(LabelSetError) as info:
        labelset_yaml.parse_labelset(hostile.alias_bomb_labelset(labels=1_000))
    assert str(info.value) == "<label set>:3: Label 'l0' has 2,001 prompts and exclusions; a label takes at most 100 (its name among them)."
    assert len(cleaned) == 0  # 4,002,000 before
    with pytest.raises(LabelSetError, match=r":\d+: The label set has more than 5,000 prompts and exclusions in all"):
        labelset_yaml.parse_labelset(hostile.alias_bomb_labelset(labels=60, prompts=99))
    assert len(cleaned) < 5_100
    assert len(labelset_yaml.parse_labelset(hostile.alias_bomb_labelset(labels=50, prompts=99)).labels) == 50


def test_label_set_size_limits_hold_for_files_python_and_deep_yaml(tmp_path):
    from indexer.audit.labelset import Label, LabelSet, check_bounds
    from indexer.audit.labelset_yaml import load_labelset, parse_labelset
    from indexer.audit.runner import label_vectors

    many = "name: s\nlabels:\n" + "".join(f"  - l{i}\n" for i in range(1_001))
    with pytest.raises(LabelSetError, match="^<label set>:3: The label set has 1,001 labels; a set holds at most 1,000"):
        parse_labelset(many)
    with pytest.raises(LabelSetError, match="nested too deeply"):
        parse_labelset("name: s\nlabels: " + "[" * 100_000)
    big = tmp_path / "big.yaml"
    big.write_text("name: s\nlabels: [a]\n#" + "x" * 4_000_000 + "\n")
    with pytest.raises(LabelSetError, match="is larger than a label set can be"):
        load_labelset(big)
    crlf = tmp_path / "crlf.yaml"
    crlf.write_bytes(b"name: s\r\nlabels: [a, b]\r\n")
    assert load_labelset(crlf).source == "name: s\nlabels: [a, b]\n"
    built = LabelSet("py", tuple(Label(f"l{i}", tuple(f"p{i} {j}" for j in range(60))) for i in range(90)))
    with pytest.raises(LabelSetError, match="more than 5,000 prompts"):
        check_bounds(built.labels)
    with pytest.raises(LabelSetError, match="more than 5,000 prompts"):
        label_vectors(lambda texts: pytest.fail("embedded"), built)


# --- 12. marks in bulk --------------------------------------------------------------------------


class _CountingConnection:
    def __init__(self, con):
        self.con, self.executes = con, 0

    def execute(self, *args, **kwargs):
        self.executes += 1
        return self.con.execute(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.con, name)


def test_marks_are_written_in_bulk_the_last_verdict_winning(small):
    from indexer.learning.marks import INSERT_CHUNK, mark_windows, marks_of

    archive, _ = small
    ids = [int(i) for i in archive.catalog.all_window_ids()]
    rows = 50_000
    counting = _CountingConnection(archive.catalog.con)
    archive.catalog._con = counting
    told = []
    try:
        marked = mark_windows(archive, "dog", [ids[i % len(ids)] for i in range(rows)], [bool(i % 3) for i in range(rows)],
                              progress=lambda done, total: told.append((done, total)))
    finally:
        archive.catalog._con = counting.con
    assert marked == rows and counting.executes < 10  # one INSERT per row before
    assert told[-1] == (rows, rows) and len(told) == -(-rows // INSERT_CHUNK)
    last = {ids[i % len(ids)]: bool(i % 3) for i in range(rows)}  # the newest verdict per window
    assert {m.window_id: m.positive for m in marks_of(archive, "dog")} == last
    assert len(marks_of(archive, "dog")) == len(ids)


def test_a_million_row_marks_csv_is_refused_and_nothing_is_marked(cli, small, tmp_path):
    from indexer.learning.marks import read_marks_csv

    archive, _ = small
    ids = [int(i) for i in archive.catalog.all_window_ids()]
    csv = hostile.big_marks_csv(tmp_path / "marks.csv", ids)
    assert os.path.getsize(csv) > 3_000_000
    with pytest.raises(MarkError, match="^marks.csv has more than 100,000 rows; one call marks at most 100,000 windows"):
        read_marks_csv(csv)
    _one_sentence(cli("label", "mark", "dog", "--csv", csv, "--archive", archive.directory), "more than 100,000 rows")
    assert archive.catalog.one("SELECT count(*) FROM label_marks")[0] == 0
    result = cli("label", "mark", "dog", "--csv", hostile.big_marks_csv(tmp_path / "ok.csv", ids, 30_000),
                 "--archive", archive.directory)
    assert result.exit_code == 0 and "Marked 30000 window(s) for 'dog'." in result.output, result.output
    assert archive.catalog.one("SELECT count(*) FROM label_marks")[0] == len(ids)


def test_marks_past_the_limit_or_naming_a_missing_window_write_nothing(small):
    from indexer.learning.marks import MAX_MARKS, mark_windows

    archive, _ = small
    window = int(archive.catalog.all_window_ids()[0])
    with pytest.raises(MarkError, match=f"^{MAX_MARKS + 1:,} windows were given; one call marks at most"):
        mark_windows(archive, "dog", np.full(MAX_MARKS + 1, window), True)
    with pytest.raises(MarkError, match="No indexed window has the id 987654"):
        mark_windows(archive, "dog", [window, 987654, -1, 2**70], True)
    assert archive.catalog.one("SELECT count(*) FROM label_marks")[0] == 0
