"""The catalog remembers text vectors: the same words go through the text tower once per archive."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexer import Archive
from indexer.archive.catalog import CATALOG_FILE
from indexer.audit.runner import run_audit
from indexer.audit.saved_runs import rows_query
from indexer.config import EncoderConfig
from indexer.embedding import DEFAULT_PROMPTS
from indexer.errors import ModelNotAvailableError
from indexer.audit.labelset import inline_labelset
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def arch(tmp_path):
    write_sequence(tmp_path / "recs" / "a.wav", [(440, 3), (1200, 3)])
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([tmp_path / "recs"])
    return tmp_path / "arch"


def test_vectors_come_back_exactly_and_the_model_sees_each_text_once(arch):
    encoder = FakeEncoder()
    with Archive.open(arch, encoder=encoder) as archive:
        first = archive.embed_text(["tone 440", "tone 1200"])
        assert encoder.text_calls == 1
        again = archive.embed_text(["tone 1200", "tone 440", "tone 1200"])
        assert encoder.text_calls == 1
        np.testing.assert_array_equal(again, first[[1, 0, 1]])
        np.testing.assert_array_equal(first, FakeEncoder().embed_text(["tone 440", "tone 1200"]))
        archive.embed_text(["tone 440", "tone 3000"])  # only the new text is embedded
        assert encoder.text_calls == 2
        assert archive.embed_text([]).shape == (0, encoder.identity.dim)


def test_the_catalog_keeps_them_for_the_next_process_and_per_prompt_ensemble(arch):
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        stored = archive.embed_text(["tone 440"])
    encoder = FakeEncoder()
    with Archive.open(arch, encoder=encoder, read_only=True) as archive:
        np.testing.assert_array_equal(archive.embed_text(["tone 440"]), stored)
        assert encoder.text_calls == 0
        plain = archive.embed_text(["tone 440"], prompts=("{label}",))  # another ensemble is another vector
        assert encoder.text_calls == 1
        np.testing.assert_array_equal(plain, FakeEncoder().embed_text(["tone 440"], prompts=("{label}",)))
        archive.embed_text(["tone 440"], prompts=("{label}",))
        assert encoder.text_calls == 1  # read-only: remembered in memory until the session closes...
        rows = archive.catalog.con.execute("SELECT prompts, text FROM text_vectors ORDER BY 1").fetchall()
        assert rows == [(json.dumps(list(DEFAULT_PROMPTS)), "tone 440")]
    with Archive.open(arch, encoder=FakeEncoder()) as archive:  # ...then written aside
        rows = archive.catalog.con.execute("SELECT prompts, text FROM text_vectors ORDER BY 1").fetchall()
    assert rows == [(json.dumps(list(DEFAULT_PROMPTS)), "tone 440"), (json.dumps(["{label}"]), "tone 440")]


def test_a_model_with_another_revision_does_not_read_them(arch):
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        archive.embed_text(["tone 440"])
        archive.catalog.con.execute("UPDATE text_vectors SET model_key = 'other-model@1'").fetchall()
    encoder = FakeEncoder()
    with Archive.open(arch, encoder=encoder) as archive:
        archive.embed_text(["tone 440"])
    assert encoder.text_calls == 1


def test_an_audit_run_again_does_not_embed_its_labels_again(arch):
    labelset = inline_labelset(["tone 440", "tone 1200 but not tone 3000"], name="tones", mode="multi-label")
    encoder = FakeEncoder()
    with Archive.open(arch, encoder=encoder) as archive:
        first = run_audit(archive, labelset)
        calls = encoder.text_calls
        second = run_audit(archive, labelset)
        assert encoder.text_calls == calls == 1
        a = rows_query(archive.catalog, [first.id], "SELECT label, score FROM audit_results WHERE run_id = ? ORDER BY 1", [first.id])
        b = rows_query(archive.catalog, [second.id], "SELECT label, score FROM audit_results WHERE run_id = ? ORDER BY 1", [second.id])
    assert a == b


def test_an_archive_from_before_the_cache_still_answers_read_only(arch):
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        archive.catalog.con.execute("DROP TABLE text_vectors").fetchall()
    with Archive.open(arch, encoder=FakeEncoder(), read_only=True) as archive:
        assert archive.search("tone 440", k=1)


def test_a_remembered_label_set_is_scored_without_loading_the_model(arch, tmp_path):
    labelset = inline_labelset(["tone 440", "tone 1200"], name="tones", mode="multi-label")
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        first = run_audit(archive, labelset)
        expected = rows_query(archive.catalog, [first.id], "SELECT * EXCLUDE (run_id) FROM audit_results WHERE run_id = ?", [first.id])
    nowhere = EncoderConfig(model=str(tmp_path / "no-model-here"), device="cpu")
    with Archive.open(arch, encoder_config=nowhere) as archive:
        again = run_audit(archive, labelset)
        assert not archive.encoder_loaded  # the manifest knows the logit scale, the catalog the text
        got = rows_query(archive.catalog, [again.id], "SELECT * EXCLUDE (run_id) FROM audit_results WHERE run_id = ?", [again.id])
        assert got == expected
        assert [h.path for h in archive.search("tone 440", k=2)]  # ... and a search typed before
        with pytest.raises(ModelNotAvailableError):  # new words need the model
            run_audit(archive, inline_labelset(["tone 3000"]))


def test_an_archive_from_before_the_logit_scale_was_recorded_asks_the_model(arch):
    manifest = json.loads((arch / "manifest.json").read_text())
    assert manifest.pop("logit_scale") == FakeEncoder.logit_scale
    (arch / "manifest.json").write_text(json.dumps(manifest))
    with Archive.open(arch, encoder_config=EncoderConfig(model="/nonexistent", device="cpu")) as archive:
        with pytest.raises(ModelNotAvailableError):
            archive.logit_scale  # noqa: B018 — the property loads the model
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        assert archive.logit_scale == FakeEncoder.logit_scale


# --- a read-only search remembers its words ----------------------------------------------------------

HOLD = """
import sys, time
sys.path.insert(0, {root!r})
{hold}
open({marker!r}, "w").close()
time.sleep(300)
"""
HOLD_WRITER_LOCK = "from indexer.archive.locks import WriterLock\nlock = WriterLock({arch!r}); lock.acquire()"
HOLD_CATALOG = "import duckdb\ncon = duckdb.connect({catalog!r})"
SEARCH = """
import sys
from indexer.cli.main import cli
try:
    cli(sys.argv[1:])
except SystemExit as exc:
    print("exit", exc.code, file=sys.stderr)
print("torch loaded:", "torch" in sys.modules, file=sys.stderr)
"""


@contextlib.contextmanager
def _held(arch, hold: str):
    """Another process holding the writer lock (an index run between commits) or the catalog itself."""
    marker = arch.parent / "held"
    marker.unlink(missing_ok=True)
    code = HOLD.format(root=str(ROOT), marker=str(marker), hold=hold.format(arch=str(arch), catalog=str(arch / CATALOG_FILE)))
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and holder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), holder.stderr.read() if holder.poll() is not None else "the holder did not start"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=30)


def _search(arch, words):
    done = subprocess.run([sys.executable, "-c", SEARCH, "search", words, "--archive", str(arch), "-k", "2", "--json"],
                          cwd=ROOT, capture_output=True, text=True)
    assert "exit 0" in done.stderr or "exit None" in done.stderr, done.stderr[-2000:]
    return done.stdout, done.stderr.strip().splitlines()[-1]


def test_a_read_only_search_remembers_new_words_without_the_writer_lock(tiny_clap_dir, tmp_path):
    """While another process holds the writer lock, `search` of new words loads the model once:
    the second search of them finds their vector in the catalog (and imports no torch)."""
    from indexer.model.loading import load_encoder

    write_sequence(tmp_path / "recs" / "a.wav", [(440, 3), (1200, 3)])
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=load_encoder(EncoderConfig(model=str(tiny_clap_dir), device="cpu")), create=True) as archive:
        archive.index([tmp_path / "recs"])
    with _held(arch, HOLD_WRITER_LOCK):
        first, loaded = _search(arch, "a dog barking twice")
        assert loaded == "torch loaded: True"
        second, loaded = _search(arch, "a dog barking twice")
        assert loaded == "torch loaded: False"
    assert json.loads(second) == json.loads(first) and json.loads(first)


def test_a_busy_catalog_skips_remembering_and_the_search_still_answers(arch):
    encoder = FakeEncoder()
    with Archive.open(arch, encoder=encoder, read_only=True) as archive:
        assert archive.search("tone 3000", k=1)
        archive.catalog.yield_lock()  # between units of work, as a long-lived reader does
        with _held(arch, HOLD_CATALOG):  # held as a writer holds it while it commits
            started = time.monotonic()
            assert archive.remember_text() is False
            assert time.monotonic() - started < 10
        assert archive.search("tone 3000", k=1) and encoder.text_calls == 1  # still remembered in memory
    # not lost: the words waited, and the session wrote them on closing, the catalog free again
    later = FakeEncoder()
    with Archive.open(arch, encoder=later, read_only=True) as archive:
        archive.embed_text(["tone 3000"])
        assert later.text_calls == 0


def test_searches_remember_their_words_while_an_index_run_writes(tmp_path):
    """Each search writes its words aside between the index run's commits; the run is not disturbed."""
    from tests.test_pipeline import make_drop, worker_code

    drop = make_drop(tmp_path / "drop")
    for i in range(8):
        write_sequence(drop / f"more{i}.wav", [(440 + 100 * i, 10), (3000, 10)])
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop / "a.wav"])
    marker = tmp_path / "batches-done"
    code = worker_code(arch, drop, marker).replace("0.02", "0.3")
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    written = {}
    try:
        while writer.poll() is None and len(written) < 4:
            if not marker.exists():
                time.sleep(0.05)
                continue
            words = f"tone {500 + 37 * len(written)}"
            with Archive.open(arch, encoder=FakeEncoder(), read_only=True) as reader:
                assert reader.search(words, k=1)
                written[words] = reader.remember_text()
    finally:
        assert writer.wait(timeout=300) == 0, writer.stderr.read()
    assert any(written.values()), f"no search got its words in while the run wrote: {written}"
    with Archive.open(arch, encoder=FakeEncoder(), read_only=True) as archive:
        kept = {text for (text,) in archive.catalog.con.execute("SELECT text FROM text_vectors").fetchall()}
        assert {w for w, ok in written.items() if ok} <= kept
        assert archive.catalog.one("SELECT count(*) FROM recordings WHERE status = 'indexed'")[0] == 12
