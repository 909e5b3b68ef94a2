"""An archive opened with its model: what every engine job (indexing, search, audits) works on.

The storage layer (``indexer.archive``) knows no model; this adds the one the archive was built
with, loaded on first use (an audit of remembered words never loads it), and text vectors
remembered in the catalog so the same words are embedded once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.archive.catalog import Catalog
from indexer.archive.manifest import Manifest
from indexer.archive.storage import ArchiveStorage, NewArchive
from indexer.archive.text_cache import TextVectorCache
from indexer.archive.vector_store import StoreConfig
from indexer.config import EncoderConfig, WindowConfig
from indexer.embedding import DEFAULT_PROMPTS, EmbeddingSetup, Encoder
from indexer.errors import ArchiveError, ModelNotAvailableError


def load_model(config: EncoderConfig) -> Encoder:
    """A CLAP loaded as the archive loads its own (torch is imported here, on first use)."""
    from indexer.model.loading import load_encoder

    return load_encoder(config)


class Session(ArchiveStorage):
    def __init__(
        self, directory: Path, catalog: Catalog, manifest: Manifest, read_only: bool, store_config: StoreConfig,
        encoder: Encoder | None = None, encoder_config: EncoderConfig | None = None,
    ):
        super().__init__(directory, catalog, manifest, read_only, store_config)
        self._encoder = encoder
        if encoder_config is None or not encoder_config.model:
            encoder_config = replace(encoder_config or EncoderConfig(), model=manifest.model_id)
        self._encoder_config = encoder_config
        self._text_cache: TextVectorCache | None = None
        self._resident = None

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        encoder: Encoder | None = None,
        encoder_config: EncoderConfig | None = None,
        create: bool = False,
        windows: WindowConfig | None = None,
        store_config: StoreConfig = StoreConfig(),
        read_only: bool = False,
    ) -> "Session":
        """Open an archive; with ``create=True`` make it if missing (needs the encoder for its identity).

        ``encoder`` is checked against the archive's model; without one, the archive's own model is
        loaded on first use with ``encoder_config`` (device, batch size, cache).
        """
        new = None
        if create and not cls.exists(directory):
            if encoder is None:
                raise ArchiveError("Creating an archive needs an encoder to record the model it was built with.")
            new = NewArchive(encoder.identity, encoder.logit_scale, windows or WindowConfig())
        return super().open(
            directory, new=new, identity=encoder.identity if encoder is not None else None, windows=windows,
            store_config=store_config, read_only=read_only, encoder=encoder, encoder_config=encoder_config,
        )

    model_advice = "encoder_config=EncoderConfig(model=DIR)"
    """How advice on missing weights names the way to choose a model: the Python parameter (the CLI
    sets its flag, ``--model DIR``)."""

    @property
    def encoder(self) -> Encoder:
        """The archive's own model, loaded once on first use."""
        if self._encoder is None:
            try:
                encoder = load_model(self._encoder_config)  # torch loads only when a model is needed
            except ModelNotAvailableError as exc:
                raise exc.naming(self.model_advice) from None
            self.manifest.check_model(encoder.identity)
            self._encoder = encoder
        return self._encoder

    @property
    def encoder_loaded(self) -> bool:
        return self._encoder is not None

    @property
    def encoder_config(self) -> EncoderConfig:
        return self._encoder_config

    def embedding_note(self, setup: EmbeddingSetup | None) -> str | None:
        """Called by an indexing run (either engine) before it embeds: the first such run records in
        the manifest how it computes vectors (device kind, precision, batch size); a later one that
        computes them otherwise gets one sentence saying so, and goes on (its vectors differ by
        ~1e-5). None for an encoder that does not say (``setup`` None: a test's stand-in)."""
        recorded = self.manifest.setup
        if setup is None or recorded == setup:
            return None
        if recorded is None:
            self.begin_write()
            self.manifest = self.manifest.with_setup(setup)
            self.manifest.save(self.directory)
            return None
        return (
            f"This archive was built with {_described(recorded)}; this run embeds with {_described(setup)} — its "
            "vectors differ by about 1e-5, no search can tell, but a resumed run is bit-identical only with the same "
            "device kind, precision and batch."
        )

    @property
    def logit_scale(self) -> float:
        """CLAP's temperature from the manifest, so scoring remembered text loads no model."""
        if self.manifest.logit_scale is not None:
            return self.manifest.logit_scale
        return float(self.encoder.logit_scale)

    def embed_text(self, texts: Sequence[str], prompts: Sequence[str] = DEFAULT_PROMPTS) -> np.ndarray:
        """Prompt-ensemble text vectors, remembered in the catalog so the same words are embedded once
        (and the model is loaded only for words it has not embedded before). Read-only, they are
        written when the session closes or ``remember_text`` is called."""
        if self._text_cache is None:
            self._text_cache = TextVectorCache(self.catalog, self.manifest.identity, lambda: self.encoder)
        return self._text_cache.embed(texts, prompts)

    def remember_text(self, wait_s: float | None = None) -> bool:
        """Write the text vectors a read-only session computed to the catalog, without the writer
        lock (as marks are), waiting at most ``wait_s`` (default ``connection.ASIDE_WAIT_S``) for
        another process's write; the catalog's connection is let go, so call it between units of
        work (a long-lived reader such as the app: when a page run ends). False when the catalog
        could not be written just now: they wait for the next call, and the search never fails for it."""
        if self._text_cache is None:
            return True
        return self._text_cache.write_pending() if wait_s is None else self._text_cache.write_pending(wait_s)

    @property
    def scan_kind(self) -> str:
        """"cuda" when the session was opened for a CUDA device by name (``--device cuda``), else
        "cpu": where scans of the stored vectors (audits, suggestions) compute. By name, not by
        what happens to be loaded or found, so one command always takes one path; a GPU rounds the
        last bits its own way, so a saved audit run records which (``AuditRun.product``)."""
        return "cuda" if str(self._encoder_config.device or "").startswith("cuda") else "cpu"

    def block_product(self, queries, block_rows: int | None = None):
        """The ``BlockProduct`` scans of this session use: on the GPU over its resident rows, or
        on the CPU (torch is imported here, by a scan, so a search of remembered text never does)."""
        from indexer.model.block_product import DEFAULT_BLOCK_ROWS, BlockProduct

        rows = block_rows or DEFAULT_BLOCK_ROWS
        if self.scan_kind == "cuda":
            return BlockProduct(queries, rows, self._encoder_config.device, self.resident_vectors())
        return BlockProduct(queries, rows)

    def resident_vectors(self):
        """The archive's rows in the memory of the GPU this session was opened for (``--device
        cuda``), one set for the session's life: a long-lived process (the app, a service) uploads
        them once and scans them there again and again."""
        if self._resident is None:
            from indexer.model.devices import resolve_device
            from indexer.model.resident_vectors import ResidentVectors

            budget = self._encoder_config.gpu_memory_gb
            self._resident = ResidentVectors(resolve_device(self._encoder_config.device),
                                             None if budget is None else int(budget * 2**30))
        return self._resident

    def compact(self, progress=None):
        """Same as ``soundtrace compact``: the vector files rewritten without deleted windows, the
        catalog copied to its live size, the ANN built again; refused while an index run writes
        (``archive.compaction``). Returns its ``CompactionReport``."""
        from indexer.archive.compaction import compact

        self.begin_write()
        try:
            return compact(self, progress)
        finally:
            self.end_write()

    def close(self) -> None:
        self._resident = None  # frees the GPU memory with the session
        try:
            self.remember_text()
        finally:
            super().close()


def _described(setup: EmbeddingSetup) -> str:
    return f"{setup.precision} on {setup.device_kind} in batches of {setup.batch_size}"
