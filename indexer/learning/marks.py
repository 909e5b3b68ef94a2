"""Marks: (label, window, positive or negative, when, note), kept in the catalog.

A mark names the window by what it is (content hash, channel, start), so re-indexing, moving or
copying a file never loses it: it applies wherever that content is indexed, and is reported as
unplaced while it is nowhere. Every value reaches DuckDB as a bound parameter.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from indexer.errors import ArchiveError, LabelError, MarkError
from indexer.label_names import label_key, normalise_label, parse_labels
from indexer.session import Session

MAX_NOTE_LENGTH = 2_000
MAX_MARKS = 100_000
"""Windows one call (one CSV) may mark: they are written in one bulk insert in one transaction
(≈ 1 s per 100,000), and a fit reads every mark of its label. A million-row CSV is refused after
its 100,001st row, before any is written."""
INSERT_CHUNK = 20_000
"""Marks per INSERT statement, all in one transaction: ``progress`` is told after each."""
CSV_COLUMNS = ("window_id", "positive")
_TRUE, _FALSE = {"1", "true", "yes", "y", "positive", "+", "✓"}, {"0", "false", "no", "n", "negative", "-", "✗"}


@dataclass(frozen=True)
class Mark:
    label: str
    window_id: int | None
    """Where the marked audio is indexed now (None: nowhere in the archive at present)."""
    marked_window_id: int
    positive: bool
    marked_at: datetime
    note: str | None
    path: str | None
    start_s: float
    channel: int
    content_hash: str


@dataclass(frozen=True)
class LabelSummary:
    label: str
    key: str
    positives: int
    negatives: int
    unplaced: int
    versions: int


def writable(archive: Session) -> None:
    """Marks and fits are catalog rows only, written like audit runs: no writer lock, so an analyst
    can mark while an index run works (the catalog lets each in turn)."""
    if archive.read_only:
        raise ArchiveError("This archive was opened read-only; marks and learned labels need it writable.")


def clean_label(name: str) -> tuple[str, str]:
    """The label as the audit language cleans it, and its matching key."""
    try:
        if not isinstance(name, str) or not normalise_label(name):
            raise MarkError('A label name is needed, e.g. "customer yelling".')
        label = parse_labels([name])[0]
    except LabelError as exc:  # longer than a label can be, before it is cleaned
        raise MarkError(str(exc)) from None
    return label, label_key(label)


def mark_windows(archive: Session, name: str, window_ids: Sequence[int], positive: bool | Sequence[bool],
                 note: str | None = None, progress: Callable[[int, int], None] | None = None) -> int:
    """Mark windows for a label (a window marked again takes the newest verdict: the last row of a
    list). Returns how many. All or nothing: one transaction of bulk inserts, the values bound as an
    Arrow table; ``progress(done, total)`` hears after each chunk of ``INSERT_CHUNK``."""
    writable(archive)
    label, key = clean_label(name)
    try:
        ids = [int(i) for i in window_ids]
    except (TypeError, ValueError):
        raise MarkError("Window ids are whole numbers, as `soundtrace search` lists them.") from None
    if len(ids) > MAX_MARKS:
        raise MarkError(too_many_marks(f"{len(ids):,} windows were given"))
    verdicts = [bool(positive)] * len(ids) if isinstance(positive, bool) else [bool(p) for p in positive]
    if len(verdicts) != len(ids):
        raise MarkError(f"{len(ids)} window(s) but {len(verdicts)} verdict(s): give one verdict per window.")
    if note is not None and len(note) > MAX_NOTE_LENGTH:
        raise MarkError(f"A note is at most {MAX_NOTE_LENGTH} characters.")
    if not ids:
        return 0
    con = archive.catalog.con
    in_range = [0 <= i < 2**63 for i in ids]
    marks = pa.table({
        "row": pa.array(np.flatnonzero(in_range), pa.int64()),
        "window_id": pa.array([i for i, ok in zip(ids, in_range) if ok], pa.int64()),
        "positive": pa.array([v for v, ok in zip(verdicts, in_range) if ok], pa.bool_()),
    })
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    con.register("_new_marks", marks)
    try:
        with archive.catalog.transaction():
            found = {int(i) for i in con.execute(
                "SELECT DISTINCT m.window_id FROM _new_marks m SEMI JOIN windows w ON w.id = m.window_id").fetchnumpy()["window_id"]}
            missing = [i for i in ids if i not in found]
            if missing:
                shown = ", ".join(str(i) for i in missing[:5]) + (" …" if len(missing) > 5 else "")
                raise MarkError(f"No indexed window has the id {shown}; window ids are listed by `soundtrace search`.")
            label = con.execute("SELECT min(label) FROM label_marks WHERE label_key = ?", [key]).fetchone()[0] or label
            for lo in range(0, len(ids), INSERT_CHUNK):
                con.execute(  # the last row for the same audio wins, as it would row by row
                    "INSERT OR REPLACE INTO label_marks (label_key, label, content_hash, channel, start_s, positive,"
                    " marked_window_id, note, marked_at) SELECT ?, ?, r.content_hash, w.channel, w.start_s, m.positive,"
                    " m.window_id, ?, ? FROM _new_marks m JOIN windows w ON w.id = m.window_id"
                    " JOIN recordings r ON r.id = w.recording_id WHERE m.row >= ? AND m.row < ?"
                    " QUALIFY row_number() OVER (PARTITION BY r.content_hash, w.channel, w.start_s ORDER BY m.row DESC) = 1",
                    [key, label, note, now, lo, lo + INSERT_CHUNK],
                )
                if progress is not None:
                    progress(min(lo + INSERT_CHUNK, len(ids)), len(ids))
    finally:
        con.unregister("_new_marks")
    return len(ids)


def too_many_marks(what: str) -> str:
    return f"{what}; one call marks at most {MAX_MARKS:,} windows, so split the marks into several files."


def read_marks_csv(path: Path) -> tuple[list[int], list[bool]]:
    """``window_id,positive`` rows (positive: 1/0, true/false, yes/no); a bad row is an error naming its line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip().lower() for h in reader.fieldnames or []]
            if not set(CSV_COLUMNS) <= set(header):
                raise MarkError(f"{path.name} needs the columns {', '.join(CSV_COLUMNS)}; it has {', '.join(header) or 'none'}.")
            ids, verdicts = [], []
            for line, row in enumerate(reader, start=2):
                if len(ids) == MAX_MARKS:
                    raise MarkError(too_many_marks(f"{path.name} has more than {MAX_MARKS:,} rows"))
                if None in row:
                    raise MarkError(f"{path.name} line {line} has more fields than the header ({', '.join(header)}).")
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                try:
                    ids.append(int(row["window_id"]))
                except ValueError:
                    raise MarkError(f"{path.name} line {line}: window_id {row['window_id']!r} is not a whole number.") from None
                value = row["positive"].lower()
                if value not in _TRUE | _FALSE:
                    raise MarkError(f"{path.name} line {line}: positive {row['positive']!r} is not 1/0, true/false or yes/no.")
                verdicts.append(value in _TRUE)
    except OSError as exc:
        raise MarkError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MarkError(f"{path.name} is not a readable CSV ({exc}).") from None
    return ids, verdicts


def marks_of(archive: Session, name: str) -> list[Mark]:
    """A label's marks, each placed on the window where its audio is indexed now (if anywhere)."""
    _, key = clean_label(name)
    rows = archive.catalog.con.execute(
        "SELECT m.label, min(w.id), m.marked_window_id, m.positive, m.marked_at, m.note, arg_min(r.path, w.id), m.start_s,"
        " m.channel, m.content_hash"
        " FROM label_marks m LEFT JOIN recordings r ON r.content_hash = m.content_hash AND r.status = 'indexed'"
        " LEFT JOIN windows w ON w.recording_id = r.id AND w.channel = m.channel AND w.start_s = m.start_s"
        " WHERE m.label_key = ? GROUP BY m.label_key, m.content_hash, m.channel, m.start_s, m.label, m.marked_window_id,"
        " m.positive, m.marked_at, m.note ORDER BY m.marked_at, m.marked_window_id", [key],
    ).fetchall()
    return [Mark(label=r[0], window_id=None if r[1] is None else int(r[1]), marked_window_id=int(r[2]), positive=bool(r[3]),
                 marked_at=r[4], note=r[5], path=r[6] if r[1] is not None else None, start_s=float(r[7]), channel=int(r[8]),
                 content_hash=r[9])
            for r in rows]


def label_summaries(archive: Session) -> list[LabelSummary]:
    """Every label with marks or learned versions."""
    keys = [r[0] for r in archive.catalog.con.execute(
        "SELECT label_key FROM label_marks UNION SELECT label_key FROM learned_labels ORDER BY 1").fetchall()]
    return [_summary(archive, key) for key in keys]


def label_summary(archive: Session, name: str) -> LabelSummary | None:
    """One label's counts (None: never marked nor learned), without reading every other label's marks."""
    _, key = clean_label(name)
    known = archive.catalog.con.execute(
        "SELECT count(*) FROM (SELECT label_key FROM label_marks WHERE label_key = ?"
        " UNION SELECT label_key FROM learned_labels WHERE label_key = ?)", [key, key]).fetchone()[0]
    return _summary(archive, key) if known else None


def newest_versions(archive: Session) -> dict[str, int]:
    """Every learned label (as first written) and its newest version, without reading any marks:
    the app lists them on each page run."""
    rows = archive.catalog.con.execute(
        "SELECT min(label), max(version) FROM learned_labels GROUP BY label_key ORDER BY lower(min(label))").fetchall()
    return {str(name): int(version) for name, version in rows}


def window_marks(archive: Session, name: str, window_ids: Sequence[int]) -> dict[int, bool]:
    """The label's verdict (True: ✓) on those of ``window_ids`` whose audio is marked, a copy of
    marked audio included; unmarked windows are absent. What the app shows beside hits."""
    _, key = clean_label(name)
    ids = [int(i) for i in window_ids if 0 <= int(i) < 2**63]
    if not ids:
        return {}
    rows = archive.catalog.con.execute(
        "SELECT w.id, m.positive FROM windows w JOIN recordings r ON r.id = w.recording_id AND r.status = 'indexed'"
        " JOIN label_marks m ON m.content_hash = r.content_hash AND m.channel = w.channel AND m.start_s = w.start_s"
        " WHERE m.label_key = ? AND w.id IN (SELECT unnest(?::BIGINT[]))", [key, ids],
    ).fetchall()
    return {int(window_id): bool(positive) for window_id, positive in rows}


def _summary(archive: Session, key: str) -> LabelSummary:
    con = archive.catalog.con
    name = con.execute("SELECT coalesce((SELECT min(label) FROM label_marks WHERE label_key = ?),"
                       " (SELECT min(label) FROM learned_labels WHERE label_key = ?))", [key, key]).fetchone()[0]
    versions = con.execute("SELECT count(*) FROM learned_labels WHERE label_key = ?", [key]).fetchone()[0]
    marks = marks_of(archive, name)
    return LabelSummary(
        label=name, key=key, positives=sum(m.positive for m in marks if m.window_id is not None),
        negatives=sum(not m.positive for m in marks if m.window_id is not None),
        unplaced=sum(m.window_id is None for m in marks), versions=int(versions),
    )


def unplaced_marks(archive: Session) -> set[tuple]:
    """Marks (of every label) whose audio is indexed nowhere at present, by their keys."""
    return set(archive.catalog.con.execute(
        "SELECT label_key, content_hash, channel, start_s FROM label_marks m WHERE NOT EXISTS (SELECT 1 FROM recordings r"
        " JOIN windows w ON w.recording_id = r.id WHERE r.content_hash = m.content_hash AND r.status = 'indexed'"
        " AND w.channel = m.channel AND w.start_s = m.start_s)"
    ).fetchall())


def marks_hash(marks: Sequence[Mark]) -> str:
    """What a fit learned from: the placed marks (by what their windows are, so a re-index with other
    window ids keeps the hash) and verdicts, order-free."""
    items = sorted(f"{m.content_hash}:{m.channel}:{m.start_s!r}:{int(m.positive)}" for m in marks if m.window_id is not None)
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


def marked_windows(archive: Session, name: str) -> np.ndarray:
    """Every window now holding audio marked for the label, copies of a marked file included (none
    of them is proposed for marking or drawn as a weak negative)."""
    _, key = clean_label(name)
    rows = archive.catalog.con.execute(
        "SELECT DISTINCT w.id FROM label_marks m JOIN recordings r ON r.content_hash = m.content_hash AND r.status = 'indexed'"
        " JOIN windows w ON w.recording_id = r.id AND w.channel = m.channel AND w.start_s = m.start_s"
        " WHERE m.label_key = ? ORDER BY 1", [key],
    ).fetchnumpy()
    return rows["id"].astype(np.int64)


def placed(marks: Sequence[Mark]) -> tuple[np.ndarray, np.ndarray]:
    """(window ids, verdicts) of the marks whose audio is indexed now."""
    kept = [m for m in marks if m.window_id is not None]
    return np.array([m.window_id for m in kept], np.int64), np.array([m.positive for m in kept], bool)
