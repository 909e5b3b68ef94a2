"""Two runs at once never corrupt an archive: the second writer is refused, and an index file
that disagrees with the catalog is repaired from it, never trusted."""

from __future__ import annotations

import subprocess
import sys
import time

import faiss
import numpy as np
import pytest

from indexer import Archive
from indexer.errors import ArchiveBusyError
from indexer.archive.manifest import Manifest
from indexer.archive.vector_store import INDEX_FILE, VectorStore
from tests.fakes import FakeEncoder
from tests.test_pipeline import ROOT, WORKER, big_drop, clean_snapshot, make_drop, run_worker, snapshot  # noqa: F401


def _start_slow_run(arch, drop, marker):
    code = WORKER.format(root=str(ROOT), arch=str(arch), drop=str(drop), marker=str(marker)).replace("0.02", "0.3")
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
        code = WORKER.format(root=str(ROOT), arch=str(arch), drop=str(big_drop), marker=str(tmp_path / f"m{n}"))
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True))
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    refused = [err for code, err in results if code != 0]
    assert len(refused) <= 1, results
    assert all("ArchiveBusyError" in err and "is writing to the archive" in err for err in refused)
    run_worker(arch, big_drop, None)  # whatever happened, one more run finds nothing left to do...
    assert snapshot(arch) == clean_snapshot  # ...and the archive is that of one clean run


@pytest.mark.parametrize("damage", ["extra ids", "missing ids", "both, same count"])
def test_an_index_file_that_disagrees_with_the_catalog_is_repaired(tmp_path, damage):
    drop = make_drop(tmp_path / "drop")
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        ids = np.sort(archive.catalog.all_window_ids())
        vectors = archive.window_vectors(ids)
    store = VectorStore.empty(vectors.shape[1])
    if damage == "extra ids":
        store.add(np.concatenate([ids, [ids.max() + 100]]), np.vstack([vectors, vectors[:1]]))
    elif damage == "missing ids":
        store.add(ids[1:], vectors[1:])
    else:
        store.add(np.concatenate([ids[1:], [ids.max() + 100]]), np.vstack([vectors[1:], vectors[:1]]))
    store.save(arch / INDEX_FILE)  # the manifest still says the file is current
    assert Manifest.load(arch).index_generation >= 0
    for read_only in (True, False):
        with Archive.open(arch, encoder=FakeEncoder(), read_only=read_only) as archive:
            assert np.array_equal(np.sort(archive.store.ids()), ids)
            hits = archive.search("tone 440", k=10)
            assert hits and all(h.best.window_id in set(ids.tolist()) for h in hits)
    repaired = faiss.read_index(str(arch / INDEX_FILE))
    assert np.array_equal(np.sort(faiss.vector_to_array(repaired.id_map)), ids)


def test_a_reader_keeps_no_stale_index_file_of_its_own(tmp_path):
    """A process without the writer lock never writes the index file while a writer holds it."""
    drop = make_drop(tmp_path / "drop")
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
    before = (arch / INDEX_FILE).stat().st_mtime_ns
    store = VectorStore.load(arch / INDEX_FILE)
    store.remove(store.ids()[:1])
    store.save(arch / INDEX_FILE)
    damaged = (arch / INDEX_FILE).stat().st_mtime_ns
    assert damaged != before
    from indexer.archive.locks import WriterLock

    with WriterLock(arch):  # another process is writing (held from here, another descriptor)
        with Archive.open(arch, encoder=FakeEncoder()) as archive:
            assert len(archive.store) == archive.catalog.window_count()  # repaired in memory
        assert (arch / INDEX_FILE).stat().st_mtime_ns == damaged  # but the file is the writer's to write


class _OpenAnotherAfterFirstFile:
    """A progress sink that opens a second, non-writing Archive while the writer is mid-run."""

    def __init__(self, arch):
        self.arch, self.other = arch, None

    def start(self, files, total_bytes):
        pass

    def file_done(self, path, outcome, size_bytes, audio_s):
        if self.other is None:
            self.other = Archive.open(self.arch, encoder=FakeEncoder())  # its catch-up cannot be saved now

    def windows_embedded(self, count):
        pass

    def finish(self):
        pass


def test_a_non_writer_never_saves_an_older_index_over_a_newer_one(tmp_path):
    drop = make_drop(tmp_path / "drop")
    more = tmp_path / "more"
    from tests.audio_factory import write_sequence

    for i in range(4):
        write_sequence(more / f"m{i}.wav", [(700 + 100 * i, 10)])
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
    sink = _OpenAnotherAfterFirstFile(arch)
    with Archive.open(arch, encoder=FakeEncoder()) as writer:
        writer.index([more], progress=sink)
        final = writer.catalog.generation()
    assert Manifest.load(arch).index_generation == final
    sink.other.close()  # holds an older catch-up; the writer's newer file must stay
    assert Manifest.load(arch).index_generation == final
    on_disk = VectorStore.load(arch / INDEX_FILE)
    with Archive.open(arch, encoder=FakeEncoder(), read_only=True) as archive:
        assert np.array_equal(np.sort(on_disk.ids()), np.sort(archive.catalog.all_window_ids()))


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


@pytest.mark.parametrize("damage", [b"", b"garbage" * 100, "other dimension"])
def test_an_unreadable_index_file_is_rebuilt_from_the_catalog(tmp_path, damage):
    drop = make_drop(tmp_path / "drop")
    arch = tmp_path / "arch"
    with Archive.open(arch, encoder=FakeEncoder(), create=True) as archive:
        archive.index([drop])
        ids = np.sort(archive.catalog.all_window_ids())
    if damage == "other dimension":
        store = VectorStore.empty(8)
        store.add(ids, np.ones((len(ids), 8), np.float32))
        store.save(arch / INDEX_FILE)
    else:
        (arch / INDEX_FILE).write_bytes(damage)
    with Archive.open(arch, encoder=FakeEncoder()) as archive:
        assert np.array_equal(np.sort(archive.store.ids()), ids)
        assert archive.search("tone 440", k=1)
    assert VectorStore.load(arch / INDEX_FILE).dim == FakeEncoder().identity.dim
