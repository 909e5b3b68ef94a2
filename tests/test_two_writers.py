"""Two runs at once never corrupt an archive: the second writer is refused, and a process that
opened the archive before another wrote sees the other's windows on its next use."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from indexer import Archive
from indexer.errors import ArchiveBusyError
from tests.fakes import FakeEncoder
from tests.test_pipeline import ROOT, big_drop, clean_snapshot, make_drop, run_worker, snapshot, worker_code  # noqa: F401


def _start_slow_run(arch, drop, marker):
    code = worker_code(arch, drop, marker).replace("0.02", "0.3")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()
    return proc


def test_a_second_index_run_is_refused_while_one_writes(big_drop, clean_snapshot, tmp_path):
    arch = tmp_path / "arch"
    first = _start_slow_run(arch, big_drop, tmp_path / "marker")
    try:
        with Archive.open(arch, encoder=FakeEncoder()) as archive:
            with pytest.raises(ArchiveBusyError) as info:
                archive.index([big_drop])
        message = str(info.value)
        assert f"pid {first.pid}" in message and "is writing to the archive" in message
        assert "\n" not in message
    finally:
        assert first.wait(timeout=300) == 0, first.stderr.read()
    assert snapshot(arch) == clean_snapshot


def test_two_index_commands_at_once_leave_the_archive_of_one_run(big_drop, clean_snapshot, tmp_path):
    """The corruption seen before: both exit 0, work done twice, index file with ids the catalog lacks."""
    arch = tmp_path / "arch"
    procs = []
    for n in range(2):
        code = worker_code(arch, big_drop, tmp_path / f"m{n}")
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True))
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    refused = [err for code, err in results if code != 0]
    assert len(refused) <= 1, results
    assert all("ArchiveBusyError" in err and "is writing to the archive" in err for err in refused)
    run_worker(arch, big_drop, None)  # whatever happened, one more run finds nothing left to do...
    assert snapshot(arch) == clean_snapshot  # ...and the archive is that of one clean run


def test_a_write_first_folds_in_what_another_process_committed(tmp_path):
    drop = make_drop(tmp_path / "drop")
    more = tmp_path / "more"
    from tests.audio_factory import write_sequence

    write_sequence(more / "m.wav", [(700, 10)])
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
    early = Archive.open(arch, encoder=FakeEncoder())
    with Archive.open(arch, encoder=FakeEncoder()) as other:
        other.index([more])
    gone = early.catalog.one("SELECT id FROM recordings WHERE file_name = 'b.wav'")[0]
    early.delete_recordings([gone])
    assert np.array_equal(np.sort(early.store.ids()), np.sort(early.catalog.all_window_ids()))
    assert [h.path.rsplit("/", 1)[-1] for h in early.search("tone 700", k=1)] == ["m.wav"]
    early.close()
