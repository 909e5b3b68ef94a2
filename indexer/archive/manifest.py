"""``manifest.json``: what produced an archive's vectors, so two models' vectors are never mixed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from indexer.archive.durable import replace_atomically
from indexer.config import WindowConfig
from indexer.embedding import EmbeddingSetup, ModelIdentity
from indexer.errors import ArchiveDamagedError, ArchiveError, ModelMismatchError

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 3
"""2: vectors in segment files (catalog migration 006); 3: their checksums and the ANN's record in the
catalog (migration 012). A soundtrace that knows only an older format must not open it."""


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("soundtrace", "faiss-cpu", "faiss-gpu-cu12", "duckdb", "transformers", "torch"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


@dataclass(frozen=True)
class Manifest:
    model_id: str
    revision: str
    dim: int
    window_s: float
    hop_s: float
    min_tail_s: float
    logit_scale: float | None = None
    """CLAP's learned temperature, so audits whose text the catalog remembers need no model (None:
    an archive from before it was recorded; the model says)."""
    channels: str | None = None
    """The indexing runs' channel mode ("mix" or "split"), fixed by the first run that met a file
    with more than one channel (None: not yet, or an archive from before it was recorded)."""
    device_kind: str | None = None
    """How the first run that embedded computed its vectors: "cpu" or "cuda", its precision
    ("fp32", "tf32", "bf16", "fp16") and batch size; a resumed run gives the same bits only with
    the same three (None: not yet embedded, or an archive from before they were recorded)."""
    precision: str | None = None
    batch_size: int | None = None
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    versions: dict[str, str] = field(default_factory=_versions)
    format_version: int = FORMAT_VERSION

    @classmethod
    def new(cls, identity: ModelIdentity, windows: WindowConfig, logit_scale: float) -> "Manifest":
        return cls(
            model_id=identity.model_id,
            revision=identity.revision,
            dim=identity.dim,
            window_s=windows.length_s,
            hop_s=windows.hop_s,
            min_tail_s=windows.min_tail_s,
            logit_scale=float(logit_scale),
        )

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.model_id, self.revision, self.dim)

    @property
    def windows(self) -> WindowConfig:
        return WindowConfig(length_s=self.window_s, hop_s=self.hop_s, min_tail_s=self.min_tail_s)

    def check_model(self, identity: ModelIdentity) -> None:
        """Same weights (revision) and dimension, whatever path or id they were loaded from."""
        if identity.revision != self.revision or identity.dim != self.dim:
            raise ModelMismatchError(
                f"This archive holds vectors from model '{self.model_id}' (revision {self.revision[:12]}, "
                f"{self.dim} dims); '{identity.model_id}' (revision {identity.revision[:12]}) cannot be mixed in — "
                "use the archive's model or a new --archive directory."
            )

    def check_windows(self, windows: WindowConfig) -> None:
        if (windows.length_s, windows.hop_s) != (self.window_s, self.hop_s):
            raise ModelMismatchError(
                f"This archive was indexed with {self.window_s:g} s windows and a {self.hop_s:g} s hop; "
                f"{windows.length_s:g} s / {windows.hop_s:g} s would mix two kinds of vectors — use a new --archive directory."
            )

    @property
    def setup(self) -> EmbeddingSetup | None:
        """How the archive's vectors were computed, once a run recorded it."""
        if self.device_kind is None or self.precision is None or self.batch_size is None:
            return None
        return EmbeddingSetup(self.device_kind, self.precision, self.batch_size)

    def with_setup(self, setup: EmbeddingSetup) -> "Manifest":
        return replace(self, device_kind=setup.device_kind, precision=setup.precision, batch_size=setup.batch_size)

    def upgraded(self) -> "Manifest":
        """This manifest at the current format, with the versions that wrote it."""
        return replace(self, format_version=FORMAT_VERSION, versions=_versions())

    def save(self, directory: Path) -> None:
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        replace_atomically(Path(directory) / MANIFEST_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, directory: Path) -> "Manifest":
        """The manifest, every field of its declared type; ``ArchiveDamagedError`` naming the file otherwise."""
        path = Path(directory) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ArchiveDamagedError(f"The archive manifest {path} cannot be read ({exc.strerror or exc}).") from None
        except ValueError as exc:  # not JSON, or not UTF-8
            raise _damaged(path, f"it is not valid JSON ({str(exc).splitlines()[0][:80]})") from None
        if not isinstance(data, dict):
            raise _damaged(path, "it does not hold an object")
        version = data.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise _damaged(path, "its format_version is not a number")
        if version > FORMAT_VERSION:
            raise ArchiveError(f"The archive at {directory} was written by a newer soundtrace; upgrade to open it.")
        values = {}
        for name, kinds, required in _FIELDS:
            if name not in data or (data[name] is None and not required):
                if required:
                    raise _damaged(path, f"it has no {name}")
                continue
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise _damaged(path, f"its {name} is {json.dumps(value)[:40]}")
            values[name] = value
        if values["dim"] <= 0 or values["window_s"] <= 0 or values["hop_s"] <= 0:
            raise _damaged(path, "its dimension or window lengths are not positive")
        if values.get("channels") not in (None, "mix", "split"):
            raise _damaged(path, "its channels is neither mix nor split")
        if values.get("device_kind") not in (None, "cpu", "cuda"):
            raise _damaged(path, "its device_kind is neither cpu nor cuda")
        if values.get("precision") not in (None, "fp32", "tf32", "bf16", "fp16"):
            raise _damaged(path, "its precision is none of fp32, tf32, bf16, fp16")
        if values.get("batch_size", 1) < 1:
            raise _damaged(path, "its batch_size is not positive")
        return cls(**values, format_version=version)


_FIELDS = (
    ("model_id", str, True), ("revision", str, True), ("dim", int, True), ("window_s", (int, float), True),
    ("hop_s", (int, float), True), ("min_tail_s", (int, float), True), ("logit_scale", (int, float), False),
    ("channels", str, False), ("device_kind", str, False), ("precision", str, False), ("batch_size", int, False),
    ("created_at", str, False), ("versions", dict, False),
)
"""Each stored field, the JSON types it may hold, and whether an archive must have it."""


def _damaged(path: Path, why: str) -> ArchiveDamagedError:
    return ArchiveDamagedError(
        f"The archive manifest {path} is damaged: {why}. Restore it from a backup (it names the archive's model "
        "and window settings; `soundtrace check` says what else is wrong)."
    )
