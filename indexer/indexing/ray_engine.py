"""``index --engine ray``: the same run as the local engine, its decoding and embedding on Ray Data.

The driver plans exactly as the local run does (``pipeline._plan``), then streams the files
through two Ray Data stages (``ray_stages``: decode + windows + quality figures as CPU tasks, CLAP
in an actor pool), and stays the archive's single writer: a file whose windows have all come back
is written to a shard (``shards.Staging``, keyed by content hash) and then committed in file order
by the same ``Committer`` as the local engine, so searches keep answering between commits. A run
killed at any moment (driver or worker) and started again reuses every shard and commits what it
had not: the archive ends equal to an uninterrupted local run, vector bits included.
"""

from __future__ import annotations

import logging
import math
import pickle
import re
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from indexer.audio.windows import Window
from indexer.config import EncoderConfig, RayOptions
from indexer.embedding import EmbeddingSetup, embedding_setup
import indexer.errors as errors
from indexer.errors import EngineError, SoundtraceError
from indexer.indexing.commits import Committer, PendingFile, window_rows
from indexer.indexing.decoder_process import OUTCOME, WINDOW, Outcome
from indexer.indexing.one_file import no_vector_reason
from indexer.indexing.shards import STAGING_DIR, Staging
from indexer.session import Session

FILES_PER_TASK = 4
"""Files one decoding task takes at most (one decoding child process each): fewer when a run has
too few files to give every CPU of the cluster a task."""
INSTALL_HINT = "Ray is not installed here: pip install 'soundtrace[ray]' to use --engine ray."


def require_ray():
    """Ray, or one sentence saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EngineError(INSTALL_HINT) from None
    return ray


@dataclass
class _Arrival:
    """What has come back for one file so far."""

    windows: dict[int, Window] = field(default_factory=dict)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    outcome: Outcome | None = None
    expected: int = -1


def embed_on_ray(archive: Session, plan, options, committer: Committer) -> float:
    """Decode, embed and commit ``plan.todo`` on Ray. Returns the seconds the actors spent in the model."""
    ray = require_ray()
    model = _actor_model(archive, options.ray)
    setup = EmbeddingSetup(model.device, model.precision, model.batch_size)
    if note := archive.embedding_note(setup):  # recorded in the manifest or compared, as the local engine does
        committer.report.notes.append(note)
    staging = Staging(options.ray.staging or archive.directory / STAGING_DIR, archive.manifest, options.decode, model)
    job = replace(plan.job, staged=staging.finished())
    started_here = _connect(ray, options.ray)
    try:
        with warnings.catch_warnings():  # Ray Data's advice on block counts and deprecations is not the user's
            warnings.filterwarnings("ignore", module=r"ray(\.|$)")
            seconds = _run(ray, archive, plan, job, staging, options.ray, model, committer)
    except SoundtraceError:
        raise
    except Exception as exc:  # noqa: BLE001 — a Ray failure, told in one sentence
        raise _explained(exc) from None
    finally:
        if started_here:
            ray.shutdown()
    return seconds  # the shards committed are cleared by the run (``shards.clear_committed``), whichever engine


def _actor_model(archive: Session, config: RayOptions) -> EncoderConfig:
    """How each actor loads the model: the archive's own, on the device kind asked for, at that
    kind's precision and batch (a passed encoder's, when the archive was opened with one, so both
    engines give the same bits)."""
    actor_kind = "cuda" if config.gpus_per_worker else "cpu"
    model = archive.encoder_config.for_device(actor_kind)
    if archive.encoder_loaded:
        model = replace(model, batch_size=int(archive.encoder.batch_size))
        if (setup := embedding_setup(archive.encoder)) is not None:
            model = replace(model, precision=setup.precision)
    return replace(model, threads=config.cpus_per_worker, device=actor_kind)


def _run(ray, archive: Session, plan, job, staging: Staging, config: RayOptions, encoder_config: EncoderConfig,
         committer: Committer) -> float:
    from indexer.indexing.ray_stages import EmbedWindows, decode_files

    workers = config.workers or _default_workers(ray, config)
    decoders, per_task = decoding_tasks(ray.cluster_resources(), len(plan.todo))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own
    context.print_on_execution_start = False
    files = ray.data.from_items([{"file": i} for i in range(len(plan.todo))],
                                override_num_blocks=max(1, math.ceil(len(plan.todo) / per_task)))
    decoded = files.map_batches(
        decode_files, fn_kwargs={"job": ray.put(job)}, batch_size=per_task,
        num_cpus=0, compute=ray.data.TaskPoolStrategy(size=decoders),  # the decoder child runs at nice 19
    )
    embedded = decoded.map_batches(
        EmbedWindows, fn_constructor_kwargs={"encoder_config": encoder_config, "manifest": archive.manifest},
        batch_size=max(1, encoder_config.batch_size), compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker or None,
    )
    for item in plan.todo:
        committer.register(item)
    arrivals: dict[int, _Arrival] = {}
    model_seconds = 0.0
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        windows_seen = 0
        for file, ordinal, kind, payload, seconds in zip(batch["file"], batch["ordinal"], batch["kind"],
                                                         batch["payload"], batch["model_s"]):
            model_seconds += float(seconds)
            arrival = arrivals.setdefault(int(file), _Arrival())
            if kind == WINDOW:
                arrival.windows[int(ordinal)], arrival.vectors[int(ordinal)] = pickle.loads(payload)
                windows_seen += 1
            elif kind == OUTCOME:
                arrival.outcome, arrival.expected = pickle.loads(payload), int(ordinal)
            if arrival.outcome is not None and len(arrival.vectors) >= arrival.expected:
                _settle(plan.todo[int(file)], arrivals.pop(int(file)), staging)
        if committer.progress and windows_seen:
            committer.progress.windows_embedded(windows_seen)
        committer.commit_ready()
        archive.catalog.yield_lock()  # readers may use the catalog while the cluster works
    committer.commit_ready(final=True)
    archive.catalog.yield_lock()
    if committer.order:
        raise EngineError(f"Ray returned no outcome for {len(committer.order)} file(s); run the same command again to finish.")
    return model_seconds


def _settle(item: PendingFile, arrival: _Arrival, staging: Staging) -> None:
    """One file has all its windows back: keep it as a shard, then let it wait for its turn to commit."""
    outcome = arrival.outcome
    if outcome.kind == "staged":
        digest = outcome.row.content_hash
        try:
            row = staging.row(digest, outcome.row)
        except Exception:  # noqa: BLE001 — torn or foreign: drop it so the next run embeds the file again
            staging.remove([digest])
            raise EngineError(f"The staged shard of {item.source.path.name} could not be read and was removed; "
                              "run the same command again.") from None
        item.load, item.outcome = (lambda: staging.rows(digest)), Outcome("indexed", row=row)
        return
    if outcome.kind == "indexed":
        windows = [arrival.windows[i] for i in range(arrival.expected)]
        vectors = np.stack([arrival.vectors[i] for i in range(arrival.expected)])
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            item.outcome = outcome
            item.reject(no_vector_reason(item.source.path.name, windows[int(np.argmax(bad))]))
            return
        staging.save(outcome.row, window_rows(windows, vectors))
        digest = outcome.row.content_hash
        item.load = lambda: staging.rows(digest)  # held on disk, not in the driver, until its turn
    item.outcome = outcome


def _connect(ray, config: RayOptions) -> bool:
    """Join the cluster at ``config.address``, or start a local instance; True when this call started it."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True)
    except Exception as exc:  # noqa: BLE001
        where = f"the Ray cluster at {config.address}" if config.address else "a local Ray instance"
        raise EngineError(f"Could not start or reach {where}: {exc}") from None
    return True


def decoding_tasks(resources: dict, files: int) -> tuple[int, int]:
    """(decoding tasks at once, files per task) for a cluster of ``resources``: one task per CPU of
    the cluster, whatever the number of model actors (decoding is what bounds a GPU run; each
    task's decoder child runs at nice 19, so on CPUs the model actors use it takes only what they
    leave), and files spread so every one of those tasks has some, ``FILES_PER_TASK`` at most."""
    cpus = max(1, int(resources.get("CPU", 1.0)))
    return cpus, max(1, min(FILES_PER_TASK, math.ceil(files / cpus)))


def _default_workers(ray, config: RayOptions) -> int:
    resources = ray.cluster_resources()
    if config.gpus_per_worker:
        gpus = resources.get("GPU", 0.0)
        if gpus < config.gpus_per_worker:
            raise EngineError(f"The Ray cluster has {gpus:g} GPU(s); --gpus-per-worker {config.gpus_per_worker:g} needs more.")
        return max(1, int(gpus // config.gpus_per_worker))
    return max(1, int(resources.get("CPU", 1.0) // config.cpus_per_worker))


def _explained(exc: BaseException) -> SoundtraceError:
    """The soundtrace error a worker raised (Ray passes it on as an object, or only as the text of
    its traceback when it killed an actor's start), else one sentence about the Ray failure."""
    seen: BaseException | None = exc
    while seen is not None:
        cause = getattr(seen, "cause", None)
        if isinstance(cause, SoundtraceError):
            return cause
        for name, message in reversed(_WORKER_ERROR.findall(str(seen))):
            kind = getattr(errors, name, None)
            if isinstance(kind, type) and issubclass(kind, SoundtraceError):
                return kind(message.strip())
        seen = seen.__cause__ or seen.__context__
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return EngineError(f"The Ray run failed ({type(exc).__name__}: {first_line}); run the same command again to resume.")


_WORKER_ERROR = re.compile(r"indexer\.errors\.(\w+): ([^\n]+)")
