"""The documented Python API: ``Archive.open(dir, create=True)`` with ``.index(...)`` and ``.search(...)``.

A thin facade: each method is one call into an engine job, which all take the archive as a
``Session`` (an archive with its model), so the jobs never import this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from indexer.config import EncoderConfig
from indexer.embedding import Encoder
from indexer.errors import ModelNotAvailableError
from indexer.search.filtering import SearchFilters
from indexer.search.ranking import RecordingHit, search_text
from indexer.session import Session, load_model

if TYPE_CHECKING:
    from indexer.indexing.pipeline import IndexOptions, IndexReport, ProgressSink
    from indexer.indexing.repair import RepairReport


class Archive(Session):
    @classmethod
    def open(
        cls, directory: str | Path, *, encoder: Encoder | None = None, encoder_config: EncoderConfig | None = None,
        create: bool = False, **options: Any,
    ) -> "Archive":
        """The archive at ``directory``; its model loads on first use (an audit of remembered words
        never loads it). ``create=True`` makes the archive when it is missing, as ``soundtrace index``
        does: built with ``encoder``, else with ``encoder_config``'s model (laion/clap-htsat-fused by
        default), loaded now because a new archive records which model made it. Without
        ``create`` a missing archive is an ``ArchiveNotFoundError``, never an empty one made by a typo.
        ``options``: ``windows``, ``store_config``, ``read_only`` (``Session.open``)."""
        if create and encoder is None and not cls.exists(directory):
            config = encoder_config or EncoderConfig()
            try:
                encoder = load_model(config.or_default_model())
            except ModelNotAvailableError as exc:
                raise exc.naming(cls.model_advice) from None
        return super().open(directory, encoder=encoder, encoder_config=encoder_config, create=create, **options)

    def index(
        self, paths: Sequence[str | Path], options: IndexOptions | None = None, progress: ProgressSink | None = None
    ) -> IndexReport:
        """Same as ``soundtrace index``: embed what is new or changed, then extend standing audits."""
        from indexer.audit.runner import extend_standing_audits  # here, so a search imports none of this
        from indexer.indexing.pipeline import IndexOptions, run_indexing
        from indexer.learning.marks import unplaced_marks

        self.begin_write()  # refuses while another process indexes
        try:
            unplaced = unplaced_marks(self)
            report = run_indexing(self, [Path(p) for p in paths], options or IndexOptions(), progress)
            report.marks_unplaced = len(unplaced_marks(self) - unplaced)
            # every run: one that changed nothing costs a look at each standing audit's generation,
            # and one after `label learn` brings the audits using that label to its new version
            report.audits = extend_standing_audits(self, np.asarray(report.recording_ids, dtype=np.int64))
            report.ann = self.maintain_ann()
        finally:
            self.end_write()
        return report

    def check(self, repair: bool = False, progress: ProgressSink | None = None,
              check_progress: Callable[[str, int, int], None] | None = None) -> RepairReport:
        """Same as ``soundtrace check [--repair]``: every byte and invariant verified; with ``repair``,
        what can be rebuilt is (the model loads only if recordings must be embedded again)."""
        from indexer.audit.runner import extend_standing_audits
        from indexer.indexing.repair import RepairReport, verify
        from indexer.indexing.repair import repair as repair_archive

        if not repair:
            with self.writes_held():
                return RepairReport(verify(self, check_progress))
        self.begin_write(repairing=True)
        try:
            report = repair_archive(self, progress, check_progress)
            if report.before.ok and not report.recording_ids:
                report.after = report.before
                return report
            report.audits = extend_standing_audits(self, np.asarray(report.recording_ids, dtype=np.int64))
            self.maintain_ann()
            report.after = verify(self, check_progress)
        finally:
            self.end_write()
        return report

    def search(self, text: str, k: int = 10, where: str | None = None, exact: bool = False, **filters) -> list[RecordingHit]:
        """Same as ``soundtrace search TEXT``: the ``k`` best recordings, best window first;
        ``exact`` scans every window instead of asking the ANN index (to check it)."""
        return search_text(self, text, k=k, filters=SearchFilters(where=where, **filters), exact=exact)
