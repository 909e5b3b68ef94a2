"""The documented Python API: ``Archive.open(dir)`` with ``.index(...)`` and ``.search(...)``.

A thin facade: each method is one call into an engine job, which all take the archive as a
``Session`` (an archive with its model), so the jobs never import this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.audit.runner import extend_standing_audits
from indexer.indexing.pipeline import IndexOptions, IndexReport, ProgressSink, run_indexing
from indexer.learning.marks import unplaced_marks
from indexer.search.filtering import SearchFilters
from indexer.search.ranking import RecordingHit, search_text
from indexer.session import Session


class Archive(Session):
    def index(
        self, paths: Sequence[str | Path], options: IndexOptions | None = None, progress: ProgressSink | None = None
    ) -> IndexReport:
        """Same as ``soundtrace index``: embed what is new or changed, then extend standing audits."""
        self.begin_write()  # refuses while another process indexes
        try:
            unplaced = unplaced_marks(self)
            report = run_indexing(self, [Path(p) for p in paths], options or IndexOptions(), progress)
            report.marks_unplaced = len(unplaced_marks(self) - unplaced)
            if report.recording_ids or report.pruned:
                report.audits = extend_standing_audits(self, np.asarray(report.recording_ids, dtype=np.int64))
            report.ann = self.maintain_ann()
        finally:
            self.end_write()
        return report

    def search(self, text: str, k: int = 10, where: str | None = None, exact: bool = False, **filters) -> list[RecordingHit]:
        """Same as ``soundtrace search TEXT``: the ``k`` best recordings, best window first;
        ``exact`` scans every window instead of asking the ANN index (to check it)."""
        return search_text(self, text, k=k, filters=SearchFilters(where=where, **filters), exact=exact)
