"""Archives on Ray Data: ``comcloak cloak INPUT... -o OUT --ray [ADDRESS]`` and :func:`cloak_dataset`.

The driver (this process) does what needs the whole archive: it plans the output names (the rules of ``comcloak
cloak``, :mod:`comcloak.engine.outputs`), holds the output folder's lock, reads the manifest, skips what is done, and
cuts the rest into the batches ``comcloak cloak`` would attack (:func:`comcloak.engine.pipeline.plan_batches`), one
Ray Data row per batch. Ray Data streams the rows through two map stages, which it fuses into the actors (the read
asks for the same resources, so it can never wait for CPUs the pool holds):

1. **read**: each batch's files are read, with the size, modification time and SHA-256 of the bytes;
2. **cloak** (``map_batches`` over an actor pool, ``ActorPoolStrategy(min_size, max_size)``, ``num_gpus`` per actor on
   GPU clusters): each actor builds one ``Cloaker`` from a :class:`~comcloak.engine.cloaker.CloakerSpec`, cloaks its
   batch, writes each output atomically under its final name and returns one record per photo. A photo that cannot
   be read, cloaked or written is a failure record; so is every photo of a batch that hits a bug; the job goes on.

The driver appends each record to the manifest as it arrives, so a killed job resumes like a killed ``comcloak
cloak``: the rerun skips what the manifest says is done. Before the job starts, the driver marks every output it will
write as this archive's own (the manifest's ``writing`` mark), so an output that a killed job renamed into place
without its record is replaced on the rerun, never mistaken for someone else's file and never left half-written (temp
files are removed under the lock). Same settings, same seeds, same batches and the same number of torch threads per
worker (``cpus_per_actor``; a plain run uses ``OMP_NUM_THREADS``, by default one per core): byte-identical cloaks to
``comcloak cloak``. A different thread count changes only float summation order: a few pixels by one level.

Workers write the outputs: on a cluster, the inputs and the output folder must be on a filesystem every node sees at
the same path (NFS, a shared volume), and the driver's lock keeps one run per folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from comcloak.codecs.photos import SkippedInput, WriteOptions
from comcloak.engine.archive import ArchiveWork, record_from_manifest, run_archive_with
from comcloak.engine.archive_options import DEFAULT_ARCHIVE, ArchiveOptions
from comcloak.engine.outputs import PlannedPhoto, plan_outputs
from comcloak.engine.pipeline import PhotoJob, PhotoRecord, plan_batches
from comcloak.errors import UserError, first_line

logger = logging.getLogger(__name__)

LOCAL = "local"  # --ray without an address: a Ray runtime started on this machine for the run
_JOBS = "jobs"  # the row column holding one batch of PhotoJobs (pickled: they only travel between our own stages)
_RECORD = "record"  # the output column: one photo's record as JSON
_MAX_BLOCKS = 4096  # beyond this many batches, blocks hold several (the object store's per-object overhead)


class RayUnavailableError(UserError, ImportError):
    """Ray (the ``ray`` extra) is not installed, or the cluster cannot be reached."""


class RayJobError(RuntimeError):
    """The Ray job stopped (the cluster went away, a worker died past its retries); the photos that finished before
    are recorded in the manifest, and a rerun resumes."""


@dataclass(frozen=True)
class ActorPool:
    """The pool of cloaking actors, each holding one ``Cloaker``.

    Args:
        min_actors: actors kept from the start (default 1).
        max_actors: the most the pool grows to (default: as many as the cluster's CPUs, or GPUs with
            ``gpus_per_actor``, allow).
        cpus_per_actor: CPUs each actor reserves (default 1; torch in the actor uses that many threads).
        gpus_per_actor: GPUs each actor reserves (default 0; 1 on GPU clusters, or a fraction to share a GPU).
    """

    min_actors: int = 1
    max_actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        if self.min_actors < 1:
            raise UserError(f"the actor pool needs at least 1 actor, got {self.min_actors}")
        if self.max_actors is not None and self.max_actors < self.min_actors:
            raise UserError(f"the actor pool's maximum ({self.max_actors}) is below its minimum ({self.min_actors})")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise UserError(f"each actor needs CPUs > 0 and GPUs >= 0, got {self.cpus_per_actor} CPUs and "
                            f"{self.gpus_per_actor} GPUs")

    def sizes(self, resources: dict[str, float]) -> tuple[int, int]:
        """``(min, max)`` actors on a cluster with ``resources`` (``ray.cluster_resources()``)."""
        if self.max_actors is not None:
            return self.min_actors, self.max_actors
        fits = int(resources.get("CPU", 1) // self.cpus_per_actor)
        if self.gpus_per_actor > 0:
            fits = min(fits, int(resources.get("GPU", 0) // self.gpus_per_actor))
        return self.min_actors, max(self.min_actors, fits)


def import_ray():
    """The ``ray`` module with Ray Data, or a one-line error naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the ray[data] part of the extra
    except ImportError as error:
        raise RayUnavailableError(f"Ray Data is not installed ({error}); install comcloak's ray extra: "
                                  "pip install 'comcloak[ray]'") from None
    return ray


def connect(address: str | None = LOCAL) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``), or with ``local`` start
    a runtime on this machine; nothing when this process is already connected (``ray.init`` called before)."""
    ray = import_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=None if address in (None, LOCAL) else address, include_dashboard=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise RayUnavailableError(f"cannot reach the Ray cluster at {address}: {first_line(error)}") from None
    quiet_ray_data(ray)


def quiet_ray_data(ray) -> None:
    """No Ray Data progress bars or per-execution INFO lines on the driver: its own bar counts photos, and the
    worker logs stay in Ray's session folder."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _read_batches(batch):
    """Stage 1 (fused by Ray Data into the actors): read each batch's files, with the identity of the bytes read."""
    import pyarrow as pa

    read = [pickle.dumps([_read_job(job) for job in pickle.loads(payload)])
            for payload in batch.column(_JOBS).to_pylist()]
    return pa.table({_JOBS: pa.array(read, pa.large_binary())})


def _read_job(job: PhotoJob) -> PhotoJob:
    try:
        stat = os.stat(job.source)
        data = Path(job.source).read_bytes()
    except OSError:
        return job  # the cloak stage reads it again and records load_photo's one-line reason
    return replace(job, data=data, identity=(stat.st_size, stat.st_mtime_ns, hashlib.sha256(data).hexdigest()))


class CloakActor:
    """Stage 2 (one per actor of the pool): one ``Cloaker`` built from ``spec``; each call cloaks, writes and scores
    the batches it is given and returns their records as JSON."""

    def __init__(self, spec: Any, check: str, write: WriteOptions, threads: int) -> None:
        import torch

        from comcloak.codecs import parse_codec

        # The actor's CPUs, not the node's: several actors share a node. (The thread count also fixes torch's float
        # summation order: the same count as a plain run gives byte-identical cloaks.)
        torch.set_num_threads(threads)
        self.cloaker = spec.build()
        self.check_codec = parse_codec(check)
        self.write = write

    def __call__(self, batch):
        import pyarrow as pa

        records = [json.dumps(record.as_dict(), ensure_ascii=False)
                   for payload in batch.column(_JOBS).to_pylist() for record in self.cloak(pickle.loads(payload))]
        return pa.table({_RECORD: pa.array(records, pa.large_string())})

    def cloak(self, jobs: list[PhotoJob]) -> list[PhotoRecord]:
        """One batch's records; a bug fails the photos it reached, never the job."""
        from comcloak.engine.pipeline import cloak_write_score

        records: list[PhotoRecord] = []
        try:
            for record in cloak_write_score(self.cloaker, jobs, self.check_codec, self.write):
                records.append(record)
        except Exception as error:  # noqa: BLE001 - a bug must not sink the archive: its photos fail with the reason
            logger.warning("cloaking a batch on a Ray actor failed", exc_info=True)
            finished = {record.source for record in records}
            records += [PhotoRecord(source=str(job.source), status="failed",
                                    error=f"{job.source}: cloaking failed ({type(error).__name__}: {error})")
                        for job in jobs if str(job.source) not in finished]
        return records


def run_archive_on_ray(
    spec: Any,
    plan: list[PlannedPhoto],
    skipped: list[SkippedInput],
    output_dir: Path,
    options: ArchiveOptions = DEFAULT_ARCHIVE,
    pool: ActorPool = ActorPool(),
    *,
    on_photo_done: Callable[[PhotoRecord], None] | None = None,
    address: str | None = LOCAL,
) -> list[PhotoRecord]:
    """:func:`comcloak.engine.archive.run_archive` with the cloaking on Ray (see the module docstring): the same
    records, manifest and outputs. ``spec``: a :class:`~comcloak.engine.cloaker.CloakerSpec`; ``options.check``: the
    codec spec the records judge after. Raises :class:`RayJobError` if the job stops; what finished is recorded."""
    ray = import_ray()
    connect(address)

    def cloak_on_ray(work: ArchiveWork) -> None:
        immediate, batches = plan_batches(work.todo, spec.config.attack_size, options.batch_size, options.overwrite,
                                          work.replaceable)
        for record in immediate:
            work.done(record)
        if not batches:
            return
        work.mark_writing([(job.source, job.destination) for jobs in batches for job in jobs])
        lowest, highest = pool.sizes(ray.cluster_resources())
        threads = max(1, int(pool.cpus_per_actor))
        actor_spec = spec if spec.threads is not None else replace(spec, threads=threads)  # ONNX Runtime's too
        # Actors take whole blocks: one batch per block (up to a cap on the number of objects) lets every actor of the
        # pool work, and lets records stream back batch by batch.
        dataset = ray.data.from_items([{_JOBS: pickle.dumps(jobs)} for jobs in batches],
                                      override_num_blocks=min(len(batches), _MAX_BLOCKS))
        # The read asks for the actors' resources so that Ray Data fuses it into them: a separate read stage could
        # wait forever for CPUs the actor pool holds (seen on a 2-CPU runtime with two 1-CPU actors).
        resources = {"num_cpus": pool.cpus_per_actor, "num_gpus": pool.gpus_per_actor or None}
        read = dataset.map_batches(_read_batches, batch_format="pyarrow", batch_size=1, **resources)
        cloaked = read.map_batches(
            CloakActor, fn_constructor_kwargs={"spec": actor_spec, "check": options.check, "write": options.write,
                                               "threads": threads},
            batch_format="pyarrow", batch_size=1, compute=ray.data.ActorPoolStrategy(min_size=lowest, max_size=highest),
            **resources)
        missing = {str(job.source) for jobs in batches for job in jobs}
        try:
            for row in cloaked.iter_rows():
                record = record_from_manifest(json.loads(row[_RECORD]))
                missing.discard(record.source)
                work.done(record)
        except UserError:  # the driver's own one-line stop (a manifest that cannot grow: the disk is full)
            raise
        except Exception as error:  # noqa: BLE001 - Ray raises many types; each means the job stopped
            raise RayJobError(f"the Ray job stopped ({type(error).__name__}: {first_line(error)}); the photos that "
                              "finished are recorded in the manifest: rerun to resume") from error
        for source in sorted(missing):  # never a silent drop
            work.done(PhotoRecord(source=source, status="failed", error=f"{source}: the Ray job returned no record"))

    return run_archive_with(cloak_on_ray, plan, skipped, output_dir, options.settings(spec), options,
                            on_photo_done=on_photo_done, hash_new_sources=False)


def cloak_dataset(
    dataset: Any,
    output_dir: str | os.PathLike,
    spec: Any = None,
    *,
    options: ArchiveOptions = DEFAULT_ARCHIVE,
    pool: ActorPool = ActorPool(),
    on_photo_done: Callable[[PhotoRecord], None] | None = None,
) -> list[PhotoRecord]:
    """Cloak the photos a Ray Dataset names into ``output_dir``, resumably, as ``comcloak cloak --ray`` does.

    Args:
        dataset: a ``ray.data.Dataset`` with a ``path`` column (one photo file per row, readable at that path on every
            node) and optionally ``relative`` (where its cloak goes under ``output_dir``; default: its path under the
            deepest folder holding every photo). Only these columns are read here; the photos are read by the job.
        output_dir: the output folder (with its manifest ``comcloak-manifest.jsonl``); a rerun skips what is done.
        spec: a :class:`~comcloak.engine.cloaker.CloakerSpec` (default: the ``balanced`` preset, the torch backend).
        options: the output options (:class:`~comcloak.engine.archive_options.ArchiveOptions`): the check profile
            or codec chain the records judge protection after (default ``facebook``), the output format (``keep``),
            the write options, the batch size (8), ``overwrite`` (redo every photo and replace existing outputs) and
            ``wait`` (wait for another run holding the output folder instead of failing).
        pool: the actor pool (:class:`ActorPool`).
        on_photo_done: called with each record as it is recorded.

    Returns:
        One :class:`~comcloak.engine.pipeline.PhotoRecord` per row (resumed ones included), in the order Ray Data
        lists the rows (the dataset's own order where its ``DataContext`` has ``execution_options.preserve_order``).

    Example:
        >>> ray.init(num_cpus=2)
        >>> photos = ray.data.from_items([{"path": str(p)} for p in Path("archive").rglob("*.jpg")])
        >>> records = cloak_dataset(photos, "cloaked", pool=ActorPool(1, 2))
    """
    quiet_ray_data(import_ray())
    from comcloak.attacks.presets import DEFAULT_STRENGTH, preset_config
    from comcloak.codecs import parse_codec
    from comcloak.engine.cloaker import CloakerSpec

    columns = dataset.columns()
    if "path" not in columns:
        raise UserError(f"the dataset needs a 'path' column (one photo file per row); it has {', '.join(columns)}")
    wanted = [name for name in ("path", "relative") if name in columns]
    rows = dataset.select_columns(wanted).take_all()
    pairs = _dataset_pairs(rows)
    if not pairs:
        raise UserError("the dataset names no photos")
    parse_codec(options.check)  # an unknown profile fails before any work
    output_dir = Path(output_dir)
    plan = plan_outputs(pairs, output_dir, [], options.output_format)
    spec = spec if spec is not None else CloakerSpec(preset_config(DEFAULT_STRENGTH))
    return run_archive_on_ray(spec, plan, [], output_dir, options, pool, on_photo_done=on_photo_done)


def _dataset_pairs(rows: list[dict[str, Any]]) -> list[tuple[Path, Path]]:
    """``(source, relative)`` per row: sources absolute; relative paths given (checked to stay inside the output
    folder) or under the photos' common folder."""
    sources = [Path(str(row["path"])).absolute() for row in rows]
    seen: set[Path] = set()
    for source in sources:
        if source in seen:
            raise UserError(f"the dataset names {source} twice")
        seen.add(source)
    if rows and "relative" in rows[0]:
        relatives = [Path(str(row["relative"])) for row in rows]
        for relative in relatives:
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise UserError(f"relative output path {str(relative)!r} must stay inside the output folder")
        return list(zip(sources, relatives))
    if not sources:
        return []
    root = Path(os.path.commonpath([source.parent for source in sources]))
    return [(source, source.relative_to(root)) for source in sources]
