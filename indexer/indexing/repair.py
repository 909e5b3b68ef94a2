"""``soundtrace check --repair``: rebuild what can be rebuilt, and name what cannot.

Headers are written again from the catalog; a renamed segment gets its name back; strays are
moved aside; recordings whose rows were lost are set aside (never answered from) and re-embedded
from their audio where it is still on disk, through the ordinary indexing run (so a kill at any
moment leaves an archive the next ``--repair`` carries on from); the ANN is built again from the
segments. What needs a backup (the catalog, the manifest) is only named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from indexer.archive import damage
from indexer.archive.integrity import CheckReport, Problem, check
from indexer.archive.segments import STRAY_DIR, SegmentFiles, layout, move_aside
from indexer.errors import ModelError
from indexer.indexing.pipeline import IndexOptions, ProgressSink, run_indexing

REPAIRABLE = {"header", "stray-file", "missing-file", "checksum", "ann"}


@dataclass
class RepairReport:
    before: CheckReport
    after: CheckReport | None = None
    done: list[str] = field(default_factory=list)
    """What was repaired, one sentence each."""
    reembedded: list[str] = field(default_factory=list)
    to_reindex: list[str] = field(default_factory=list)
    """Recordings set aside whose audio could not be embedded again here (gone, or no model)."""
    model_problem: str | None = None
    audits: list = field(default_factory=list)
    """Standing audits brought up to date with the recordings that changed."""
    recording_ids: list[int] = field(default_factory=list)
    """Recordings whose windows changed (set aside, and re-embedded where they could be)."""

    @property
    def unrepairable(self) -> list[Problem]:
        return [p for p in self.before.problems if p.kind not in REPAIRABLE]


def verify(session, progress: Callable[[str, int, int], None] | None = None) -> CheckReport:
    """``soundtrace check`` of the archive ``session`` holds open (the caller keeps writers out)."""
    return check(session.directory, session.catalog, progress)


def repair(session, progress: ProgressSink | None = None, check_progress: Callable[[str, int, int], None] | None = None) -> RepairReport:
    """Repair the archive ``session`` holds open (a ``Session``: re-embedding needs its model), under
    the writer lock the caller took. The caller then extends standing audits over
    ``report.recording_ids``, maintains the ANN and checks again."""
    report = RepairReport(check(session.directory, session.catalog, check_progress))
    problems = report.before.problems
    if not any(p.kind in REPAIRABLE for p in problems) and not damage.set_aside_before(session.catalog):
        return report
    restored = _files(session, problems, report)
    lost = [p.window_ids for p in problems
            if p.kind in ("missing-file", "checksum") and p.window_ids and p.path not in restored]
    set_aside = damage.recordings_in(session.catalog, lost)
    damage.set_aside(session.catalog, set_aside)
    report.recording_ids = [i for i, _ in set_aside]
    _settle_chunks(session, lost)
    if any(p.kind == "ann" for p in problems):
        session.catalog.set_ann_entry(None)
        report.done.append("the ANN index was dropped, to be built again from the vectors")
    session.refresh()
    waiting = damage.set_aside_before(session.catalog)  # this run's, and any a killed repair left
    report.recording_ids = sorted(set(report.recording_ids) | {i for i, _ in waiting})
    _reembed(session, [path for _, path in waiting], report, progress)
    return report


def _files(session, problems: list[Problem], report: RepairReport) -> set[str]:
    """Headers, renamed segments and strays: the catalog says what each file must be. Returns the
    missing segments found under another name (their rows are not lost)."""
    files = SegmentFiles(session.directory, session.manifest.dim)
    chunks = session.catalog.vector_chunks()
    segments = {str(s.path): s for s in layout(chunks, files.folder, files.dim)}
    strays = [Path(p.path) for p in problems if p.kind == "stray-file"]
    set_aside_earlier = sorted((files.folder / STRAY_DIR).glob("seg-*.faiss*")) if files.folder.is_dir() else []
    restored = set()
    for problem in problems:
        segment = segments.get(problem.path)
        if problem.kind == "header" and segment is not None:
            files.write_header(segment)
            report.done.append(f"the header of {segment.path} was written again")
        elif problem.kind == "missing-file" and segment is not None and not segment.path.exists():
            own = [c for c in chunks if c.segment == segment.first_id]
            twin = next((s for s in strays + set_aside_earlier if damage.matches(s, segment, own)), None)
            if twin is not None:
                damage.rename_back(twin, segment)
                if twin in strays:
                    strays.remove(twin)
                restored.add(problem.path)
                report.done.append(f"{twin.name} held the rows of the missing {segment.path.name} and was renamed back")
    for stray in strays:
        if stray.exists():
            target = move_aside(session.directory, stray)
            report.done.append(f"{stray} was moved to {target}")
    return restored


def _settle_chunks(session, lost: list[tuple[int, int]]) -> None:
    """Once no live window uses a lost range, the catalog's CRCs and files agree again."""
    if not lost:
        return
    files = SegmentFiles(session.directory, session.manifest.dim)
    damage.make_folder(session.directory)
    chunks = session.catalog.vector_chunks()
    live = session.catalog.all_window_ids()
    for segment in layout(chunks, files.folder, files.dim):
        own = [c for c in chunks if c.segment == segment.first_id
               and any(c.first_id < hi and lo < c.end_id for lo, hi in lost)]
        if not own:
            continue
        if not damage.usable(segment):
            if segment.path.exists() or segment.path.is_symlink():
                move_aside(session.directory, segment.path)
            damage.restore_missing(segment)
        session.catalog.record_chunks(damage.rechecked_chunks(live, segment, own))


def _reembed(session, paths: list[str], report: RepairReport, progress: ProgressSink | None) -> None:
    present = [p for p in paths if Path(p).is_file()]
    report.to_reindex = [p for p in paths if p not in present]
    if not present:
        return
    try:
        run_indexing(session, [Path(p) for p in present], IndexOptions(retry_failed=True), progress)
    except ModelError as exc:
        report.model_problem = str(exc)
        report.to_reindex = paths
        return
    still = {path for (path,) in session.catalog.con.execute(
        "SELECT path FROM recordings WHERE status = 'failed' AND error_kind = ?", [damage.DAMAGED_KIND]).fetchall()}
    report.reembedded = [p for p in present if p not in still]
    report.to_reindex = sorted(set(report.to_reindex) | (still & set(paths)))
