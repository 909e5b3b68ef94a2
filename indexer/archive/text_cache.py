"""Text vectors remembered per archive, so the same words never go through the text tower twice.

The text tower is the slow part of an audit on a CPU (half a second for ten labels with the
prompt ensemble, against a fraction of that for scanning a million windows): a label set run
again, a standing audit extended after every indexing run, or a search typed again reuses what
the catalog remembers. A read-only archive (a search) keeps what it computed in memory and writes it
to the catalog when its work is done (``write_pending``), aside, as marks are written: no writer
lock, and skipped when the catalog cannot be written at that moment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np

from indexer.archive.catalog import Catalog
from indexer.archive.connection import ASIDE_WAIT_S, write_aside
from indexer.embedding import DEFAULT_PROMPTS, Encoder, ModelIdentity

INSERT = "INSERT OR IGNORE INTO text_vectors (model_key, prompts, text, vector) VALUES (?, ?, ?, ?)"
MEMORY_LIMIT = 20_000
"""Vectors kept in memory per archive (2 KB each at 512 dimensions) before the oldest go."""


SAMPLE_LIMIT = 100


def remembered_vectors(catalog: Catalog, identity: ModelIdentity, limit: int = SAMPLE_LIMIT) -> np.ndarray:
    """The newest text vectors this archive's weights made, however the model was named when they
    were (its id is a path or a hub id; the revision is the weights): sample queries for ANN recall."""
    if not catalog.has_table("text_vectors"):
        return np.empty((0, identity.dim), np.float32)
    rows = catalog.con.execute(
        "SELECT vector FROM text_vectors WHERE suffix(model_key, ?) ORDER BY created_at DESC, text LIMIT ?",
        [f"@{identity.revision}", int(limit)],
    ).fetchall()
    vectors = [np.asarray(r[0], np.float32) for r in rows if len(r[0]) == identity.dim]
    return np.stack(vectors) if vectors else np.empty((0, identity.dim), np.float32)


class TextVectorCache:
    """``encoder`` is called only for text not remembered, so a known label set loads no model."""

    def __init__(self, catalog: Catalog, identity: ModelIdentity, encoder: Callable[[], Encoder]):
        self.catalog = catalog
        self.identity = identity
        self.encoder = encoder
        self.model_key = f"{identity.model_id}@{identity.revision}"
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self._table: bool | None = None  # whether the catalog has text_vectors, asked once
        self._pending: list[list] = []  # rows a read-only catalog could not take yet

    def embed(self, texts: Sequence[str], prompts: Sequence[str] = DEFAULT_PROMPTS) -> np.ndarray:
        """(len(texts), dim) prompt-ensemble vectors, exactly as ``encoder.embed_text`` gives them."""
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        templates = json.dumps(list(prompts))
        wanted = list(dict.fromkeys(texts))
        missing = [t for t in wanted if (templates, t) not in self._memory]
        if missing:
            self._remember(templates, self._stored(templates, missing))
            missing = [t for t in missing if (templates, t) not in self._memory]
        if missing:
            vectors = self.encoder().embed_text(missing, prompts)
            fresh = dict(zip(missing, vectors))
            self._store(templates, fresh)
            self._remember(templates, fresh)
        dim = self.identity.dim
        if not texts:
            return np.empty((0, dim), np.float32)
        return np.stack([self._memory[(templates, t)] for t in texts]).astype(np.float32, copy=False)

    def _stored(self, templates: str, texts: list[str]) -> dict[str, np.ndarray]:
        if not self._has_table():  # an archive from before the cache, opened read-only
            return {}
        rows = self.catalog.con.execute(
            "SELECT text, vector FROM text_vectors WHERE model_key = ? AND prompts = ? AND list_contains(?, text)",
            [self.model_key, templates, texts],
        ).fetchall()
        return {text: np.asarray(vector, np.float32) for text, vector in rows}

    def _store(self, templates: str, vectors: dict[str, np.ndarray]) -> None:
        if not self._has_table():  # an archive from before the cache, opened read-only
            return
        rows = [[self.model_key, templates, text, vector.tolist()] for text, vector in vectors.items()]
        if self.catalog.read_only:
            self._pending = (self._pending + rows)[-MEMORY_LIMIT:]
            return
        with self.catalog.transaction():
            self.catalog.con.executemany(INSERT, rows)

    def write_pending(self, wait_s: float = ASIDE_WAIT_S) -> bool:
        """Write what a read-only catalog was told to remember, aside (``connection.write_aside``,
        waiting at most ``wait_s`` for another process's write): this catalog lets go of its
        connection (it reconnects on next use), so call it when the work is done. True when there
        was nothing to write or it was written; on False (the catalog could not be written just
        now) the rows wait for the next call (at most ``MEMORY_LIMIT``)."""
        if not self._pending:
            return True
        self.catalog.yield_lock()
        written = write_aside(self.catalog.path, lambda con: con.executemany(INSERT, self._pending), wait_s)
        self._pending = [] if written else self._pending[-MEMORY_LIMIT:]
        return written

    def _has_table(self) -> bool:
        if self._table is None:
            self._table = self.catalog.has_table("text_vectors")
        return self._table

    def _remember(self, templates: str, vectors: dict[str, np.ndarray]) -> None:
        if len(self._memory) + len(vectors) > MEMORY_LIMIT:
            self._memory.clear()
        for text, vector in vectors.items():
            self._memory[(templates, text)] = vector
