"""``soundtrace check``: every byte and every invariant of an archive, each problem named.

Opening an archive verifies cheaply what every command needs (files present, long enough, with
their headers); this reads everything, like SQLite's ``PRAGMA integrity_check``: each segment
chunk against its CRC in the catalog, every catalog table (DuckDB checks its own blocks' checksums
as it reads them), window ids against the vector rows, the ANN against its file's CRC and its
segments (no duplicate or missing ids), the manifest against the catalog, and the migrations.
and each audit run's results files against their CRCs. It changes nothing; ``repair`` acts on
what it finds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb
import faiss
import numpy as np

from indexer.archive.ann import file_crc
from indexer.archive.catalog import CATALOG_FILE, Catalog
from indexer.archive.schema import migration_files
from indexer.archive.locks import WriterLock
from indexer.archive.sql import quote_identifier
from indexer.archive.checksums import Chunk, crc_of
from indexer.archive.manifest import Manifest
from indexer.archive.run_files import RunFile
from indexer.archive.segments import SEGMENTS_DIR, Segment, SegmentFiles, layout, verify_cheaply
from indexer.errors import ArchiveDamagedError, ArchiveNotFoundError

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Problem:
    """One thing wrong: what, which file, and what ``check --repair`` (or the user) does about it."""

    kind: str
    """missing-file, damaged-file, stray-file, header, checksum, ann, catalog, manifest, migrations, invariant, results"""
    path: str
    detail: str
    remedy: str
    window_ids: tuple[int, int] | None = None
    """The window ids [first, end) whose rows are lost, for kinds that lose rows."""

    @property
    def sentence(self) -> str:
        return f"{self.detail} — {self.remedy}"


@dataclass
class CheckReport:
    directory: Path
    problems: list[Problem] = field(default_factory=list)
    segments: int = 0
    chunks: int = 0
    bytes_read: int = 0
    windows: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


REINDEX = "`soundtrace check --repair` re-embeds the recordings whose windows lie there (or lists them)"
RESTORE = "restore it from a backup; it cannot be rebuilt from the rest of the archive"


def check(directory: Path, catalog: Catalog, progress: Progress | None = None) -> CheckReport:
    """Everything about the archive at ``directory`` whose ``catalog`` is open (the caller holds the
    writer lock, so nothing moves meanwhile)."""
    started = time.perf_counter()
    progress = progress or (lambda stage, done, total: None)
    report = CheckReport(Path(directory))
    add = report.problems.append
    _check_migrations(catalog, add)
    _check_catalog_tables(catalog, add, progress)
    _check_run_files(catalog, report, progress)
    try:
        manifest = Manifest.load(directory)
    except ArchiveDamagedError as exc:
        add(Problem("manifest", str(Path(directory) / "manifest.json"), str(exc).split(". Restore")[0], RESTORE))
        manifest = None
    if manifest is not None:
        segments = _check_segments(directory, catalog, manifest.dim, report, progress)
        live = catalog.all_window_ids()  # read once: both checks need every live id
        _check_windows(catalog, segments, live, add)
        _check_ann(directory, catalog, live, add, progress)
        _check_manifest(catalog, manifest, segments, add)
    report.windows = catalog.window_count()
    report.seconds = time.perf_counter() - started
    return report


def check_directory(directory: Path, progress: Progress | None = None) -> CheckReport:
    """``check`` without opening the archive as a whole (its manifest may be what is damaged):
    the writer lock, then the catalog as it is, unmigrated."""
    directory = Path(directory).expanduser().resolve()
    if not (directory / CATALOG_FILE).is_file():
        if not (directory / "manifest.json").exists():
            raise ArchiveNotFoundError(f"No soundtrace archive at {directory}.")
        report = CheckReport(directory)
        report.problems.append(Problem("catalog", str(directory / CATALOG_FILE), f"the catalog {directory / CATALOG_FILE} "
                                       "is missing", RESTORE))
        return report
    with WriterLock(directory):
        catalog = Catalog.open(directory, migrate=False)
        if catalog.needs_migration():  # an archive from an older soundtrace: migrated first, as any command would
            catalog.close()
            Catalog.open(directory).close()
            try:
                Manifest.load(directory).upgraded().save(directory)
            except ArchiveDamagedError:
                pass  # named by the check below
            catalog = Catalog.open(directory, migrate=False)
        try:
            return check(directory, catalog, progress)
        finally:
            catalog.close()


def _check_migrations(catalog: Catalog, add) -> None:
    applied = [int(v) for (v,) in catalog.con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]
    known = [v for v, _ in migration_files()]
    if applied != known[: len(applied)] or len(applied) < len(known):
        add(Problem("migrations", str(catalog.path), f"the catalog's schema migrations are {applied[-3:]}… where this "
                    f"soundtrace expects 1 to {known[-1]} in order", RESTORE))


def _check_catalog_tables(catalog: Catalog, add, progress: Progress) -> None:
    """Read every row of every table: DuckDB verifies each block's checksum as it loads it."""
    tables = [t for (t,) in catalog.con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY table_name").fetchall()]
    for number, table in enumerate(tables):
        progress("reading the catalog", number, len(tables))
        try:
            reader = catalog.con.sql(f"SELECT * FROM {quote_identifier(table)}").to_arrow_reader(65_536)
            for _ in reader:
                pass
        except duckdb.Error as exc:
            add(Problem("catalog", str(catalog.path), f"the catalog's table {table} cannot be read "
                        f"({str(exc).splitlines()[0][:120]})", RESTORE))


def _check_run_files(catalog: Catalog, report: CheckReport, progress: Progress) -> None:
    """Each audit run's results files against the size and CRC-32 the catalog recorded."""
    if not catalog.has_table("audit_run_files"):
        return
    rows = catalog.con.execute("SELECT run_id, name, size, crc32 FROM audit_run_files ORDER BY run_id, part").fetchall()
    files = catalog.run_files
    for number, (run_id, *named) in enumerate(rows):
        progress("reading the audit results", number, len(rows))
        record = RunFile(*named)
        damage = files.damage(record)
        report.bytes_read += record.size
        if damage is not None:
            report.problems.append(Problem("results", str(files.folder / record.name), f"audit run {run_id}'s results file {damage}",
                                           f"run its label set again (`soundtrace audit run`); run {run_id}'s rows cannot be read"))


def _check_segments(directory: Path, catalog: Catalog, dim: int, report: CheckReport, progress: Progress) -> list[Segment]:
    """Each segment the catalog names: present, its header, and every chunk's CRC; files it does not name."""
    add = report.problems.append
    folder = Path(directory) / SEGMENTS_DIR
    chunks = catalog.vector_chunks()
    next_id = catalog.next_window_id()
    try:
        segments = layout(chunks, folder, dim)
    except ArchiveDamagedError as exc:
        add(Problem("catalog", str(catalog.path), str(exc).split(" — ")[0], RESTORE))
        return []
    end = segments[-1].end_id if segments else None
    if end is not None and end != next_id:
        add(Problem("catalog", str(catalog.path), f"the catalog hands out window ids from {next_id} but records vector "
                    f"rows up to {end - 1}", RESTORE))
    by_segment: dict[int, list[Chunk]] = {}
    for chunk in chunks:
        by_segment.setdefault(chunk.segment, []).append(chunk)
    total = sum(s.rows for s in segments) or 1
    done = 0
    for segment in segments:
        report.segments += 1
        try:
            verify_cheaply(segment)
        except ArchiveDamagedError as exc:
            text = str(exc).split("; the archive's vectors")[0]
            if exc.kind == "header":
                add(Problem("header", str(segment.path), text, "`soundtrace check --repair` writes it again from the catalog"))
            else:
                add(Problem("missing-file", str(segment.path), text, REINDEX, (segment.first_id, segment.end_id)))
                done += segment.rows
                continue
        codes = segment.codes()
        for chunk in by_segment.get(segment.first_id, []):
            lo = chunk.first_id - segment.first_id
            rows = np.asarray(codes[lo : lo + chunk.rows])
            report.chunks += 1
            report.bytes_read += rows.nbytes
            if crc_of(rows) != chunk.crc32:
                add(Problem("checksum", str(segment.path), f"rows {lo}–{lo + chunk.rows - 1} of the vector file "
                            f"{segment.path} (windows {chunk.first_id}–{chunk.end_id - 1}) do not match their checksum",
                            REINDEX, (chunk.first_id, chunk.end_id)))
            done += chunk.rows
            progress("verifying the vectors", done, total)
        del codes
    named = {s.path.name for s in segments}
    if catalog.has_table("compaction_leftovers"):  # a committed compaction's old files, removed by the next writer
        named |= {name for (name,) in catalog.con.execute("SELECT name FROM compaction_leftovers").fetchall()}
    files = SegmentFiles(directory, dim)
    for first, path in files.listing():
        if path.name not in named and (first < next_id or not files.unfinished(path)):
            add(Problem("stray-file", str(path), f"{path} is not a vector file the catalog knows (renamed or put "
                        "there from outside); it is never read", "`soundtrace check --repair` moves it into vectors/stray/"))
    return segments


def _check_windows(catalog: Catalog, segments: list[Segment], live: np.ndarray, add) -> None:
    """Every id below the counter is a live window or a dead one, never both, and has its row."""
    dead = catalog.dead_window_ids()
    first = segments[0].first_id if segments else catalog.next_window_id()
    rows = np.arange(first, catalog.next_window_id(), dtype=np.int64)
    both = np.intersect1d(live, dead, assume_unique=True)
    outside = np.setdiff1d(live, rows, assume_unique=True)
    unaccounted = len(rows) - len(np.union1d(live, dead[dead >= first]))
    if len(both):
        add(Problem("invariant", str(catalog.path), f"{len(both)} windows (first {both[0]}) are both live and deleted", RESTORE))
    if len(outside):
        add(Problem("invariant", str(catalog.path), f"{len(outside)} windows (first {outside[0]}) have no vector row", RESTORE))
    if unaccounted > 0:
        add(Problem("invariant", str(catalog.path), f"{unaccounted} vector rows belong to no window, live or deleted", RESTORE))
    orphans = catalog.one("SELECT count(*) FROM windows w ANTI JOIN recordings r ON r.id = w.recording_id")[0]
    if orphans:
        add(Problem("invariant", str(catalog.path), f"{orphans} windows belong to no recording", RESTORE))


def _check_ann(directory: Path, catalog: Catalog, live: np.ndarray, add, progress: Progress) -> None:
    """The ANN's file against its CRC, and its ids against the windows: each once, every live one below its cover."""
    entry = catalog.ann_entry()
    if entry is None:
        if catalog.one("SELECT count(*) FROM ann_index")[0]:
            add(Problem("ann", str(catalog.path), "the catalog's record of the ANN index cannot be read", _REBUILD))
        return
    path = Path(directory) / SEGMENTS_DIR / entry.record.file
    if "/" in entry.record.file or not path.is_file():
        add(Problem("ann", str(path), f"the ANN index file {path} is missing", _REBUILD))
        return
    progress("verifying the ANN index", 0, 1)
    if path.stat().st_size != entry.bytes or file_crc(path) != entry.crc32:
        add(Problem("ann", str(path), f"the ANN index file {path} does not match its checksum", _REBUILD))
        return
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        ids = _ann_ids(index)
    except Exception:  # noqa: BLE001 - FAISS's C++ errors are named, not shown
        add(Problem("ann", str(path), f"the ANN index file {path} cannot be read", _REBUILD))
        return
    unique = np.unique(ids)
    covers = entry.record.covers_below
    missing = np.setdiff1d(live[live < covers], unique, assume_unique=True)
    if len(unique) != len(ids):
        add(Problem("ann", str(path), f"the ANN index holds {len(ids) - len(unique)} window ids twice", _REBUILD))
    if len(unique) and (unique[-1] >= covers or covers > catalog.next_window_id()):
        add(Problem("ann", str(path), f"the ANN index holds windows past the {covers - 1} it says it covers", _REBUILD))
    if len(missing):
        add(Problem("ann", str(path), f"the ANN index lacks {len(missing)} of the windows it covers (first {missing[0]})", _REBUILD))


_REBUILD = "`soundtrace check --repair` (or the next `index`) builds it again from the vectors; searches scan exactly meanwhile"


def _ann_ids(index: faiss.Index) -> np.ndarray:
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = []
    for number in range(ivf.nlist):
        size = lists.list_size(number)
        if size:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def _check_manifest(catalog: Catalog, manifest: Manifest, segments: list[Segment], add) -> None:
    path = str(catalog.path.parent / "manifest.json")
    for segment in segments[:1]:
        try:
            with open(segment.path, "rb") as fh:
                head = fh.read(8)
        except OSError:
            continue
        if len(head) == 8 and int.from_bytes(head[4:8], "little") != manifest.dim:
            add(Problem("manifest", path, f"the manifest says {manifest.dim} dimensions, the vector files hold "
                        f"{int.from_bytes(head[4:8], 'little')}", RESTORE))
    seen = catalog.channel_mode_seen()
    if manifest.channels is not None and seen is not None and seen != manifest.channels:
        add(Problem("manifest", path, f"the manifest says the channels were indexed as '{manifest.channels}', "
                    f"the windows show '{seen}'", RESTORE))
