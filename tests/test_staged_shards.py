"""Shards of a Ray run killed after its commits but before its clean-up (issue 20, item 14): every
run, whichever engine, clears the shards of files the catalog already holds, in every settings
folder; shards still to be committed stay, and ``info`` counts them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from indexer import Archive, IndexOptions
from indexer.indexing.shards import STAGING_DIR, SUFFIX
from tests.fakes import FakeEncoder
from tests.test_pipeline import make_drop

PENDING = "f" * 40
"""The content hash of a file no run has committed yet: its shard is kept for the next Ray run."""


def _shards(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*" + SUFFIX)} if root.is_dir() else set()


def _plant(folder: Path, digest: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (digest + SUFFIX)).write_bytes(b"a shard")
    return f"{folder.name}/{digest}{SUFFIX}"


def test_a_run_over_unchanged_files_clears_the_shards_the_catalog_holds(tmp_path):
    drop = make_drop(tmp_path / "drop")
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        held = sorted(archive.catalog.indexed_hashes())
    staging = arch / STAGING_DIR
    left = {_plant(staging / "0123456789abcdef", digest) for digest in held}  # as a killed Ray run leaves them
    left |= {_plant(staging / "fedcba9876543210", held[0])}  # other settings (another batch size, say)
    pending = _plant(staging / "0123456789abcdef", PENDING)
    (staging / "0123456789abcdef" / ("e" * 40 + SUFFIX + ".tmp")).write_bytes(b"torn")  # a write killed mid-way
    (staging / "not-a-settings-folder").mkdir()
    _plant(staging / "not-a-settings-folder", held[0])  # not ours to touch
    assert _shards(staging) >= left | {pending}
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        report = archive.index([drop])  # the local engine; every file unchanged
    assert report.indexed == 0 and report.unchanged == report.discovered
    assert _shards(staging) == {pending, f"not-a-settings-folder/{held[0]}{SUFFIX}"}
    assert not (staging / "fedcba9876543210").exists()  # emptied, so removed
    assert not list(staging.rglob("*.tmp"))

    from indexer.cli.main import cli

    shown = CliRunner().invoke(cli, ["info", "--archive", str(arch)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "1 finished file(s)" in shown.output and "stopped before committing them" in shown.output
    as_json = json.loads(CliRunner().invoke(cli, ["info", "--archive", str(arch), "--json"]).output)
    assert as_json["staged_shards"] == 1 and as_json["staged_bytes"] == len(b"a shard")


def test_a_missing_or_foreign_staging_folder_is_left_alone(tmp_path):
    drop = make_drop(tmp_path / "drop")
    elsewhere = tmp_path / "staging-elsewhere"
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])  # no staging folder at all
        assert not (tmp_path / "arch" / STAGING_DIR).exists()
        elsewhere.mkdir()
        (elsewhere / "notes.txt").write_text("mine")
        from indexer.config import RayOptions

        archive.index([drop], IndexOptions(ray=RayOptions(staging=elsewhere)))
    assert (elsewhere / "notes.txt").read_text() == "mine"


# --- the Ray engine itself ------------------------------------------------------------------------


def test_a_ray_run_killed_before_its_clean_up_leaves_nothing_after_the_next_run(tiny_clap_dir, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray[data] is in the dev extra")
    from indexer.config import EncoderConfig, RayOptions
    from indexer.indexing.shards import Staging
    from indexer.model.loading import load_encoder

    tiny = load_encoder(EncoderConfig(model=str(tiny_clap_dir)))
    drop = make_drop(tmp_path / "drop")
    arch = tmp_path / "arch"
    options = IndexOptions(engine="ray", ray=RayOptions(workers=1))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        with monkeypatch.context() as patch:  # killed after its commits, before any shard was removed
            patch.setattr(Staging, "remove", lambda self, digests: None)
            with Archive.open(arch, encoder=tiny, create=True) as archive:
                first = archive.index([drop], options)
        assert first.indexed == 4 and len(_shards(arch / STAGING_DIR)) == 4
        with Archive.open(arch, encoder=tiny) as archive:
            again = archive.index([drop], options)  # every file unchanged: Ray is not even asked
        assert again.indexed == 0 and again.unchanged == again.discovered
        assert _shards(arch / STAGING_DIR) == set()
    finally:
        ray.shutdown()
