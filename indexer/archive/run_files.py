"""An audit run's result rows as Parquet files beside the catalog, which names them.

Saving 1.67 million rows (ten labels over a million windows of six-window recordings) into a
DuckDB table took 0.4–0.5 s on the 2-core reference machine, nearly all of it DuckDB's insert
(0.36 s with its compression off); written by pyarrow as uncompressed Parquet, in parts encoded
in parallel, then fsynced, it takes a third of that, and DuckDB reads the files back
(``read_parquet``) in every query that asks for the run's rows.

The catalog records each file's name, size and CRC-32 in the transaction that makes the files
the run's, so a save killed halfway leaves files nobody names (removed by the next save), a run
rewritten keeps its old files until the new ones are committed, and a file missing, cut short
or altered from outside is named as damage (by size on every read, by CRC in ``check``), never
read as a run without rows.
"""

from __future__ import annotations

import os
import secrets
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexer.archive.durable import fsync_dir
from indexer.errors import ArchiveDamagedError

if TYPE_CHECKING:
    import pyarrow as pa

FOLDER = "runs"
PARTS = 2
"""Files a run's rows are split over, encoded and written in parallel (more gained nothing on 2 cores)."""
MIN_PART_ROWS = 200_000


@dataclass(frozen=True)
class RunFile:
    name: str
    size: int
    crc32: int


class RunFiles:
    """The ``runs`` folder of an archive."""

    def __init__(self, directory: Path):
        self.folder = Path(directory) / FOLDER

    def write(self, run_id: int, table: pa.Table) -> list[RunFile]:
        """``table`` in durable files no catalog names yet (the caller commits them or they are orphans)."""
        self.folder.mkdir(exist_ok=True)
        token = secrets.token_hex(6)
        parts = max(1, min(PARTS, table.num_rows // MIN_PART_ROWS))
        step = -(-table.num_rows // parts) if table.num_rows else 0
        slices = [table.slice(i * step, step) for i in range(parts)]
        with ThreadPoolExecutor(max_workers=parts) as pool:  # pyarrow and zlib let go of the GIL
            files = list(pool.map(lambda i: self._write_part(f"run-{int(run_id)}-{token}-{i}.parquet", slices[i]), range(parts)))
        fsync_dir(self.folder)
        return files

    def _write_part(self, name: str, table: pa.Table) -> RunFile:
        import pyarrow as pa  # here: opening the catalog (every command) never needs it
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="none", use_dictionary=["run_id", "label"], write_statistics=["run_id"])
        data = sink.getvalue()
        path = self.folder / name
        with open(path, "wb") as fh:
            fh.write(memoryview(data))
            fh.flush()
            os.fsync(fh.fileno())
        return RunFile(name, data.size, zlib.crc32(memoryview(data)))

    def rewrite_ids(self, run_id: int, files: list[RunFile], column: str, live: np.ndarray, first: int) -> list[RunFile]:
        """The run's rows in new files, ``column``'s window ids of ``live`` (rising) renumbered to
        ``first + rank`` (compaction); ids not in ``live`` stay as they were."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables([pq.read_table(path) for path in self.paths(files)])
        ids = table[column].to_numpy()
        at = np.minimum(np.searchsorted(live, ids), max(len(live) - 1, 0))
        found = (live[at] == ids) if len(live) else np.zeros(len(ids), bool)
        renamed = np.where(found, first + at, ids).astype(np.int64)
        return self.write(run_id, table.set_column(table.schema.get_field_index(column), column, pa.array(renamed)))

    def paths(self, files: list[RunFile]) -> list[str]:
        """The files' paths for ``read_parquet``, each checked to be there at its recorded size."""
        out = []
        for f in files:
            path = self.folder / f.name
            try:
                size = path.stat().st_size
            except OSError:
                raise ArchiveDamagedError(f"The results file {path} of an audit run is missing; run `soundtrace check`.") from None
            if size != f.size:
                raise ArchiveDamagedError(
                    f"The results file {path} of an audit run has {size:,} bytes, not the {f.size:,} it was written with;"
                    " run `soundtrace check`.")
            out.append(str(path))
        return out

    def damage(self, f: RunFile) -> str | None:
        """Why the file is not as written (missing, another size, another CRC), or None."""
        path = self.folder / f.name
        try:
            data = path.read_bytes()
        except OSError:
            return f"{path} is missing"
        if len(data) != f.size or zlib.crc32(data) != f.crc32:
            return f"{path} was altered since it was written"
        return None

    def remove(self, names: list[str]) -> None:
        for name in names:
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:
                pass

    def orphans(self, named: set[str]) -> list[str]:
        """Files here that no run names: left by a save killed before its commit."""
        try:
            present = [p.name for p in self.folder.iterdir() if p.name.startswith("run-") and p.name.endswith(".parquet")]
        except OSError:
            return []
        return [name for name in present if name not in named]
