"""A standing audit extended by an index run counts the windows it covers, not the windows it has
scored over time (issue 20, item 15): extended while a run added and replaced windows, a run of an
82-window archive recorded ``windows_scored`` 89 (the windows scored again were added to those
already counted); its result rows were right."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from indexer import Archive, IndexOptions
from indexer.audit import saved_runs as audit_runs
from indexer.audit.labelset_yaml import parse_labelset
from indexer.audit.runner import run_audit
from indexer.config import WindowConfig
from indexer.search.filtering import SearchFilters
from tests.audio_factory import RATE, tone
from tests.fakes import FakeEncoder

TOP = parse_labelset("name: top\nmode: multi-label\nthreshold: top 50%\nlabels: [tone 440, tone 1200, tone 3700]\n")
"""A "top x%" set: each new recording moves the cutoffs, so earlier recordings are scored again."""


def _write(path, seconds: float, frequency: float) -> None:
    sf.write(path, tone(frequency, seconds, amplitude=0.3), RATE)


def _count(archive, where: str | None = None) -> int:
    if where is None:
        return archive.catalog.window_count()
    from indexer.search.ranking import allowed_window_ids

    return len(allowed_window_ids(archive, SearchFilters(where=where)))


def test_an_extended_standing_audit_counts_the_windows_of_the_archive_once(tmp_path):
    folder = tmp_path / "recs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        _write(folder / f"r{i}.wav", float(rng.integers(2, 6)), [440, 1200, 3700][i % 3])
    windows = WindowConfig(length_s=1.0, hop_s=0.5)
    with Archive.open(tmp_path / "arch", encoder=FakeEncoder(), create=True, windows=windows) as archive:
        archive.index([folder])
        run = run_audit(archive, TOP, standing=True)
        filtered = run_audit(archive, TOP, SearchFilters(where="duration_s > 3"), standing=True)
        assert run.windows_scored == archive.catalog.window_count()
        for step in range(4):  # each run adds recordings and replaces one (its windows leave, new ones come)
            for j in range(2):
                _write(folder / f"new{step}-{j}.wav", 3.0 + j, [440, 1200, 3700][(step + j) % 3])
            _write(folder / f"r{step}.wav", 4.0 + step, 1200)
            report = archive.index([folder])
            assert {update.run_id for update in report.audits} == {run.id, filtered.id}
            for saved, where in ((run, None), (filtered, "duration_s > 3")):
                now = audit_runs.get_run(archive.catalog, saved.id)
                fresh = run_audit(archive, TOP, SearchFilters(where=where))
                assert now.windows_scored == fresh.windows_scored == _count(archive, where), f"step {step}, {where}"
                assert now.archive_windows == archive.catalog.window_count()
        (folder / "new0-0.wav").unlink()
        archive.index([folder], IndexOptions(prune=True))
        assert audit_runs.get_run(archive.catalog, run.id).windows_scored == archive.catalog.window_count()
