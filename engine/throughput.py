"""Throughput and memory of the attack backends, each measured in its own process (``comcloak bench``).

Every (backend, precision, batch) runs in its own ``spawn``ed process (:class:`BenchWorker`), so its peak resident
memory (``ru_maxrss``) is its own and no backend warms caches for another. The workers of one batch size are prepared
once and take turns (``--rounds``): in each round every worker times its calls while the others wait, so a drift of
the machine's speed between rounds hits every backend alike and the ratios are paired within a round. The parent
exports the step graph once (the exported backends load it from disk, as they would from the cache) and writes the
results as JSON and a markdown table whose speed-ups are ratios to the ``torch`` reference measured in the same run
(:mod:`comcloak.engine.bench_results`: the settings, the results and their reports).

Backends and precisions are the registry's (:mod:`comcloak.engine.backends.registry`), the same names as
``comcloak cloak --backend/--precision``: ``torch`` at ``fp32`` is the reference; ``onnxruntime`` is named
``onnxruntime-cuda`` in the results when run on a GPU.

The physical floor: the attack's FLOPs per image (``torch.utils.flop_counter`` over one forward and input-gradient
pass, times the steps) and the device's measured dense matmul rate (bf16 on a GPU, fp32 on a CPU). Each row reports
the fraction of that rate it reaches: ``images/s x FLOPs per image / matmul FLOP/s``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from comcloak.engine.backends.registry import BackendInfo, get_backend, register_backend
from comcloak.engine.bench_results import BenchResult, BenchSettings
from comcloak.engine.photo_bench import PhotoWork

logger = logging.getLogger(__name__)

MATMUL_SIDE = 8192  # square matmul for the device's rate (4096 on a CPU)


def peak_rss_megabytes() -> float:
    """This process's peak resident memory in MiB.

    Linux: ``VmHWM`` from ``/proc/self/status``, which starts afresh at exec; ``ru_maxrss`` would not do here,
    because a spawned child inherits its parent's maximum across fork and exec.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux, bytes on macOS


def _prepare(backend: str, precision: str, batch: int, settings: BenchSettings, onnx_path: str | None,
             work: PhotoWork | None = None):
    """In the worker process: build the runner(s) from the registry, activate and warm them up. Returns the active
    runners and a function timing calls for ``settings.min_seconds`` (at least one) -> ``(calls, seconds, mean steps
    used or None)``: random images at ``batch``, or with ``work`` (``--photos``) every photo once per pass
    (:func:`comcloak.engine.photo_bench.prepare_photos`; a call is then one photo)."""
    import torch

    from comcloak.attacks import make_through
    from comcloak.engine.backends import get_backend
    from comcloak.engine.backends.base import RunnerContext
    from comcloak.engine.backends.factory import create_runner, resolve_backend
    from comcloak.engine.photo_bench import prepare_photos
    from comcloak.models import freeze

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    config = settings.config
    exported = get_backend(backend).exported
    # The exported backends run the graph the parent exported: no torch modules in their process.
    classifier = None if exported else freeze(bench_classifier(settings).to(device))
    through = None if exported else freeze(make_through(config.through, config.seed).to(device))
    # The registry's reason, if it cannot run here (or cannot stop photos early when asked to)
    resolve_backend(backend, device, through, precision, bool(config.stop_after))

    def make_runner(height: int, width: int, max_batch: int = batch):
        context = RunnerContext(config=config, device=device, precision=precision, height=height, width=width,
                                threads=settings.threads, max_batch=max_batch, channels_last=device.type == "cuda",
                                classifier=classifier, through=through)
        if exported:  # the graph the parent exported for this view size
            graph = Path(onnx_path) if work is None else Path(work.graphs[height, width])
            context.step_graph = lambda height, width: graph
        runner = create_runner(backend, context)
        runner.activate()
        return runner

    if work is not None:
        return prepare_photos(backend, work, settings, lambda height, width: make_runner(height, width, 1))
    generator = torch.Generator().manual_seed(settings.seed)
    x0 = torch.rand(batch, 3, settings.size, settings.size, generator=generator).to(device)
    goal = torch.randint(1000, (batch,), generator=generator).to(device)
    runner = make_runner(settings.size, settings.size)
    try:
        runner.infer(x0, goal)  # warm-up: lazy allocation, graph capture, kernel selection
        if device.type == "cuda":
            torch.cuda.synchronize()
    except BaseException:
        runner.deactivate()
        raise

    def timed() -> tuple[int, float, None]:
        calls, began = 0, time.perf_counter()
        while True:
            runner.infer(x0, goal)
            if device.type == "cuda":
                torch.cuda.synchronize()
            calls += 1
            elapsed = time.perf_counter() - began
            if elapsed >= settings.min_seconds:
                return calls, elapsed, None

    return [runner], timed


def _peak_memory(device: str) -> tuple[float, float | None]:
    import torch

    # Reserved, not allocated: a CUDA graph's private pool and the allocator's cache are what the process takes from
    # the device, and the capture (the warm-up) is part of running a backend.
    peak_gpu = torch.cuda.max_memory_reserved() / 2**20 if torch.device(device).type == "cuda" else None
    return peak_rss_megabytes(), peak_gpu


def bench_classifier(settings: BenchSettings):  # -> nn.Module (torch imported lazily)
    """The classifier to time (an ``nn.ModuleList`` for a preset's ensemble): shipped weights, or random ones with
    ``random_weights`` (speed does not depend on the values; ResNet50 ships none)."""
    from torch import nn

    from comcloak.engine.cloaker import load_classifier
    from comcloak.models import create_model

    config = settings.config
    names = config.classifiers
    if settings.random_weights:
        members = [create_model(name).eval() for name in names]
    else:
        members = [load_classifier(name, config.classifier_weights) for name in names]
    return members[0] if len(members) == 1 else nn.ModuleList(members)


def attack_flops_per_image(settings: BenchSettings) -> int:
    """FLOPs of one image's whole attack: one forward + input-gradient pass (``torch.utils.flop_counter``, which
    counts a multiply-add as 2), times the steps. Counted on the CPU at batch 1."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from comcloak.attacks import make_through
    from comcloak.attacks.eot import DrawSampler, apply_draw
    from comcloak.attacks.loop import as_surrogates, stand_ins_of
    from comcloak.models import freeze

    config = settings.config
    surrogates = as_surrogates(freeze(bench_classifier(settings)))
    through = freeze(make_through(config.through, settings.seed))
    x = torch.rand(1, 3, settings.size, settings.size, requires_grad=True)
    # descent_gradient's pass, with backward() instead of autograd.grad (which FlopCounterMode's module tracker
    # rejects); the weights are frozen, so both compute the input gradient only. A robust step's draws: the stand-ins
    # run on the coded draws only, as the torch backend runs them.
    draw = DrawSampler(config.eot, len(stand_ins_of(through)), settings.seed).sample(1, settings.size, settings.size) \
        if config.eot.enabled else None
    with FlopCounterMode(display=False) as counter:
        seen = apply_draw(x, draw, stand_ins_of(through)) if draw is not None else through(x)
        labels = torch.zeros(seen.shape[0], dtype=torch.long)
        loss = sum(F.cross_entropy(surrogate(seen), labels, reduction="sum") for surrogate in surrogates)
        loss.backward()
    return int(counter.get_total_flops()) * config.steps


def measure_matmul_rate(device: str = "cpu", seconds: float = 2.0) -> tuple[float, str]:
    """The device's dense matmul rate in FLOP/s, and its dtype: bf16 on a GPU (tensor cores), fp32 on a CPU."""
    import torch

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    side = MATMUL_SIDE if cuda else MATMUL_SIDE // 2
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(3):
        a @ b
    sync()
    calls, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds or calls == 0:
        a @ b
        calls += 1
        if cuda and calls % 10:
            continue
        sync()
    sync()
    elapsed = time.perf_counter() - began
    return 2.0 * side**3 * calls / elapsed, str(dtype).removeprefix("torch.")


def _worker(connection: Any, info: BackendInfo, precision: str, batch: int, settings: BenchSettings,
            onnx: str | None, work: PhotoWork | None = None) -> None:
    """The worker process: prepare the runner(s) once, then answer ``"time"`` with ``(calls, seconds, steps)`` and
    ``"stop"`` with the peak memory; any failure is sent to the parent as one line and ends the worker."""
    register_backend(info)  # the parent's entry: a backend registered at run time is known here too
    try:
        runners, timed = _prepare(info.name, precision, batch, settings, onnx, work)
    except Exception as exc:  # reported to the parent as one line; the bench goes on with the next measurement
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(("ready", None))
    try:
        while connection.recv() == "time":
            connection.send(("ok", timed()))
        connection.send(("ok", _peak_memory(settings.device)))
    except Exception as exc:
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        for runner in runners:
            runner.deactivate()


class SpawnedWorker:
    """A worker function in its own ``spawn``ed process, spoken to over a pipe: ``target(connection, *args)``
    answers each command with ``(status, payload)``; an ``error`` (or the process ending) joins it and raises
    ``RuntimeError("LABEL: message")``. ``close()`` sends ``stop`` and returns the last payload."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], label: str) -> None:
        self.label = label
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=target, args=(child, *args))
        self._process.start()
        child.close()

    def _ask(self, command: str | None) -> Any:
        try:
            if command is not None:
                self._connection.send(command)
            status, payload = self._connection.recv()
        except (EOFError, OSError):
            status, payload = "error", f"the worker process ended (exit code {self._process.exitcode})"
        if status == "error":
            self._process.join()
            raise RuntimeError(f"{self.label}: {payload}")
        return payload

    def close(self) -> Any:
        try:
            return self._ask("stop")
        finally:
            self._process.join()


class BenchWorker(SpawnedWorker):
    """One (backend, precision, batch) in its own ``spawn``ed process, prepared once and timed on demand, so that
    several can take turns (``comcloak bench --rounds``) while each keeps its own memory and nothing else runs during
    its turn (the others wait on a pipe).

    Raises:
        RuntimeError: at construction or from :meth:`time` / :meth:`close`, with the worker's error.
    """

    def __init__(self, backend: str, precision: str, batch: int, settings: BenchSettings,
                 onnx_path: str | None, work: PhotoWork | None = None) -> None:
        info = get_backend(backend)  # an unknown name fails here, before a process is spawned
        self.backend, self.precision, self.batch = backend, precision, batch
        self.device, self.variant = settings.device, settings.variant
        variant = f"{settings.variant}: " if settings.variant else ""
        super().__init__(_worker, (info, precision, batch, settings, onnx_path, work),
                         f"{variant}{backend} {precision} at batch {batch}")
        self._ask(None)

    def time(self) -> tuple[int, float, float | None]:
        """Time calls for the settings' ``min_seconds`` (at least one): ``(calls, seconds, mean steps used)`` (the
        steps with ``--photos`` only, else None; a call is then one photo)."""
        return self._ask("time")

    def close(self) -> tuple[float, float | None]:
        """Stop the worker: its peak resident memory and peak GPU memory (None on a CPU), in MB."""
        return super().close()

    def result(self, timing: tuple[int, float, float | None], memory: tuple[float, float | None],
               round_index: int = 0) -> BenchResult:
        """The :class:`BenchResult` of one :meth:`time` ``(calls, seconds, steps)`` and the :meth:`close` memory."""
        calls, seconds, steps = timing
        name = "onnxruntime-cuda" if self.backend == "onnxruntime" and self.device.startswith("cuda") else self.backend
        return BenchResult(name, self.precision, self.batch, self.batch * calls / seconds, memory[0], seconds, calls,
                           memory[1], round_index, self.variant, steps)


class Job(NamedTuple):
    """One measurement: a backend at a precision and batch, on the attack of ``settings`` (a ``--variant``); the
    exported backends' step graph (``onnx_path``, or per view size in ``work``); ``work``: ``--photos``."""

    backend: str
    precision: str
    batch: int
    settings: BenchSettings
    onnx_path: str | None = None
    work: PhotoWork | None = None


def measure_in_subprocess(backend: str, precision: str, batch: int, settings: BenchSettings,
                          onnx_path: str | None, work: PhotoWork | None = None) -> BenchResult:
    """One measurement in a fresh process; raises RuntimeError with the child's error."""
    worker = BenchWorker(backend, precision, batch, settings, onnx_path, work)
    timing = worker.time()
    return worker.result(timing, worker.close())


def _line(worker: BenchWorker, timing: tuple[int, float, float | None], tag: str = "") -> str:
    calls, seconds, steps = timing
    variant = f"{worker.variant}: " if worker.variant else ""
    per_photo = f", {seconds / calls:.3f} s/photo, {steps:.1f} steps used" if steps is not None else ""
    return (f"{variant}{worker.backend:16s} {worker.precision} batch {worker.batch:4d}: "
            f"{worker.batch * calls / seconds:8.3f} images/s ({calls} {'calls' if steps is None else 'photos'}, "
            f"{seconds:.1f} s{per_photo}){tag}")


def measure_rounds(measurements: list[tuple[str, str]], batch: int, settings: BenchSettings, onnx_path: str | None,
                   rounds: int = 1, report: Callable[[str], None] = logger.info) -> list[BenchResult]:
    """Every (backend, precision) at ``batch``, ``rounds`` times, interleaved (:func:`measure_jobs`)."""
    return measure_jobs([Job(backend, precision, batch, settings, onnx_path) for backend, precision in measurements],
                        rounds, report)


def measure_jobs(jobs: list[Job], rounds: int = 1, report: Callable[[str], None] = logger.info) -> list[BenchResult]:
    """Every job (a variant x backend x precision x batch), ``rounds`` times, interleaved: one worker each, prepared
    once, then in every round each times its calls in turn, so that a drift of the machine's speed hits all alike
    and each round's ratios compare like with like. A measurement that fails is reported and dropped; the rest go on.

    With one round there is nothing to pair: each worker is prepared, timed and closed before the next starts, so
    only one holds the device's memory at a time (large GPU batches would not fit side by side)."""
    if rounds == 1:
        results = []
        for job in jobs:
            try:
                worker = BenchWorker(*job)
                timing = worker.time()
                results.append(worker.result(timing, worker.close()))
            except RuntimeError as error:
                report(f"skipped: {error}")
                continue
            report(_line(worker, timing))
        return results
    workers: list[BenchWorker] = []
    for job in jobs:
        try:
            workers.append(BenchWorker(*job))
        except RuntimeError as error:
            report(f"skipped: {error}")
    timings: dict[int, list[tuple[int, tuple[int, float, float | None]]]] = {id(worker): [] for worker in workers}
    try:
        for round_index in range(rounds):
            for worker in list(workers):
                try:
                    timing = worker.time()
                except RuntimeError as error:
                    report(f"skipped: {error}")
                    workers.remove(worker)
                    continue
                timings[id(worker)].append((round_index, timing))
                report(_line(worker, timing, f" (round {round_index + 1}/{rounds})"))
    finally:
        memory = {}
        for worker in workers:
            try:
                memory[id(worker)] = worker.close()
            except RuntimeError as error:
                report(f"skipped: {error}")
    return [worker.result(timing, memory[id(worker)], round_index)
            for worker in workers if id(worker) in memory
            for round_index, timing in timings[id(worker)]]


def export_for_bench(settings: BenchSettings, cache_dir: str | os.PathLike | None, height: int | None = None,
                     width: int | None = None) -> Path:
    """The step graph the exported backends run (exported once, cached like the Cloaker's), for ``height`` x
    ``width`` views (default ``settings.size`` square)."""
    from comcloak.attacks import make_through
    from comcloak.engine.backends import StepGraphCache
    from comcloak.export.step_io import StepSpec
    from comcloak.models import freeze

    config = settings.config
    classifier = freeze(bench_classifier(settings))
    through = freeze(make_through(config.through, settings.seed))
    graphs = StepGraphCache(classifier, through, cache_dir,
                            metadata={"classifier": config.classifier, "through": config.through},
                            spec=StepSpec.from_config(config))
    return graphs.path_for(height or settings.size, width or settings.size)
