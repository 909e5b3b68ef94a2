"""The catalog remembers text vectors: the same words go through the text tower once per archive."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer import Archive
from indexer.audit.runner import run_audit
from indexer.config import EncoderConfig
from indexer.embedding import DEFAULT_PROMPTS
from indexer.errors import ModelNotAvailableError
from indexer.audit.labelset import inline_labelset
from tests.audio_factory import write_sequence
from tests.fakes import FakeEncoder


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
        assert encoder.text_calls == 1  # read-only: remembered in memory, not written
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        rows = archive.catalog.con.execute("SELECT prompts, text FROM text_vectors").fetchall()
    assert rows == [(json.dumps(list(DEFAULT_PROMPTS)), "tone 440")]


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
        a = archive.catalog.con.execute("SELECT label, score FROM audit_results WHERE run_id = ? ORDER BY 1", [first.id]).fetchall()
        b = archive.catalog.con.execute("SELECT label, score FROM audit_results WHERE run_id = ? ORDER BY 1", [second.id]).fetchall()
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
        expected = archive.catalog.con.execute("SELECT * EXCLUDE (run_id) FROM audit_results WHERE run_id = ?", [first.id]).fetchall()
    nowhere = EncoderConfig(model=str(tmp_path / "no-model-here"), device="cpu")
    with Archive.open(arch, encoder_config=nowhere) as archive:
        again = run_audit(archive, labelset)
        assert not archive.encoder_loaded  # the manifest knows the logit scale, the catalog the text
        got = archive.catalog.con.execute("SELECT * EXCLUDE (run_id) FROM audit_results WHERE run_id = ?", [again.id]).fetchall()
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
