"""Making an archive from Python, and the model advice a Python caller gets (its own parameter,
not the CLI's ``--model DIR``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer import Archive, EncoderConfig, classify_audio
from indexer.errors import ArchiveNotFoundError, ModelNotAvailableError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"


def test_create_makes_an_archive_with_the_configured_model_loaded_then(tiny_clap_dir, tmp_path):
    config = EncoderConfig(model=str(tiny_clap_dir), device="cpu")
    with Archive.open(tmp_path / "new", create=True, encoder_config=config) as archive:
        assert archive.encoder_loaded  # creating records the model's identity, so it loaded now
        archive.index([SAMPLES / "tone_440hz_3s.flac"])
        assert [Path(h.path).name for h in archive.search("a tone", k=1)] == ["tone_440hz_3s.flac"]
    assert json.loads((tmp_path / "new" / "manifest.json").read_text())["model_id"] == str(tiny_clap_dir.resolve())
    with Archive.open(tmp_path / "new", create=True) as again:  # it exists: opened, no model loaded
        assert not again.encoder_loaded and again.info().recordings == 1


def test_open_without_create_never_makes_an_archive(tmp_path):
    with pytest.raises(ArchiveNotFoundError):
        Archive.open(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_missing_weights_name_the_python_parameter(tmp_path):
    missing = str(tmp_path / "no-model")
    with pytest.raises(ModelNotAvailableError) as raised:
        Archive.open(tmp_path / "new", create=True, encoder_config=EncoderConfig(model=missing))
    assert "encoder_config=EncoderConfig(model=DIR)" in str(raised.value) and "--model" not in str(raised.value)
    assert not (tmp_path / "new").exists()  # nothing is made before the model is there
    with pytest.raises(ModelNotAvailableError) as raised:
        classify_audio(SAMPLES / "tone_440hz_3s.flac", "a, b", model=missing)
    assert "pass model=DIR" in str(raised.value) and "--model" not in str(raised.value)


def test_offline_default_model_advice_names_the_parameter(monkeypatch, tmp_path):
    """The hub path: not cached and offline, the one sentence says how to get it, in Python's terms."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as raised:
        Archive.open(tmp_path / "new", create=True, encoder_config=EncoderConfig(cache_dir=str(tmp_path / "empty-cache")))
    message = str(raised.value)
    assert "laion/clap-htsat-fused" in message and "download" in message
    assert "encoder_config=EncoderConfig(model=DIR)" in message and "--model" not in message


def test_a_model_loaded_on_first_use_names_the_parameter_and_the_cli_its_flag(tiny_clap_dir, tmp_path):
    """An archive whose model cannot be found any more: new words need it; Python hears of its
    parameter, the command line of --model."""
    import shutil

    from click.testing import CliRunner

    from indexer.cli.main import cli

    model = tmp_path / "model"
    shutil.copytree(tiny_clap_dir, model)
    with Archive.open(tmp_path / "arch", create=True, encoder_config=EncoderConfig(model=str(model))) as archive:
        archive.index([SAMPLES / "tone_440hz_3s.flac"])
    shutil.rmtree(model)
    with Archive.open(tmp_path / "arch") as archive, pytest.raises(ModelNotAvailableError) as raised:
        archive.search("words never searched before")
    assert "encoder_config=EncoderConfig(model=DIR)" in str(raised.value) and "--model" not in str(raised.value)
    result = CliRunner().invoke(cli, ["search", "words never searched before", "--archive", str(tmp_path / "arch")])
    assert result.exit_code == 1 and "--model DIR" in result.output and "EncoderConfig" not in result.output
