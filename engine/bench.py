"""Throughput and memory of the attack backends, each measured in its own process (``comcloak bench``).

Every (backend, precision, batch) runs in a fresh ``spawn``ed process, so its peak resident memory (``ru_maxrss``) is
its own and no backend warms caches for another. The parent exports the step graph once (the exported backends
load it from disk, as they would from the cache) and writes the results as JSON and a markdown table whose
speed-ups are ratios to the ``torch`` reference measured in the same run.

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
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from comcloak import defaults
from comcloak.engine.backends.registry import BackendInfo, get_backend, register_backend

logger = logging.getLogger(__name__)

REFERENCE = ("torch", "fp32")  # eager fp32: the ratios' denominator
MATMUL_SIDE = 8192  # square matmul for the device's rate (4096 on a CPU)


@dataclass(frozen=True)
class BenchSettings:
    """What one bench run measures (JSON ``settings``); :attr:`config` is the attack it times."""

    classifier: str = defaults.CLASSIFIER
    through: str = defaults.THROUGH
    attack: str = defaults.ATTACK
    eps: float = defaults.EPS  # 0-255 scale
    steps: int = defaults.STEPS
    size: int = defaults.ATTACK_SIZE  # the random images' side: the attack (working) view
    classifier_weights: str | None = None
    device: str = "cpu"
    threads: int | None = None
    min_seconds: float = 5.0  # keep timing calls until this much time has passed (at least one call)
    seed: int = 0
    random_weights: bool = False  # speed only: classifiers without shipped weights (resnet50)
    strength: str | None = None  # a preset (comcloak.attacks.presets): its surrogates, stand-in, eps, draws, loss

    @property
    def config(self):  # -> AttackConfig
        from comcloak.attacks import AttackConfig
        from comcloak.attacks.presets import preset_config

        if self.strength is not None:  # the preset as comcloak cloak runs it, at this size and step count
            return preset_config(self.strength, steps=self.steps, attack_size=self.size, seed=self.seed)
        return AttackConfig.from_user(self.attack, self.eps, self.steps if self.attack != "fgsm" else None,
                                      through=self.through, classifier=self.classifier,
                                      classifier_weights=self.classifier_weights, attack_size=self.size,
                                      seed=self.seed)


@dataclass
class BenchResult:
    backend: str
    precision: str
    batch: int
    images_per_s: float
    peak_rss_mb: float
    seconds: float
    calls: int
    peak_gpu_mb: float | None = None
    round: int = 0  # which pass over the measurements (``--rounds``) made it


def machine_description(device: str = "cpu") -> str:
    """CPU model, core count and OS (and the GPU when measuring on one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    if device.startswith("cuda"):
        import torch

        text += f", {torch.cuda.get_device_name()}"
    return text


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("comcloak", "torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


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


def _measure(backend: str, precision: str, batch: int, settings: BenchSettings,
             onnx_path: str | None) -> BenchResult:
    """Runs in the child process: build the runner from the registry, warm up, time calls."""
    import torch

    from comcloak.attacks import make_through
    from comcloak.engine.backends import get_backend
    from comcloak.engine.backends.base import RunnerContext
    from comcloak.engine.backends.factory import create_runner, resolve_backend
    from comcloak.models import freeze

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    config = settings.config
    generator = torch.Generator().manual_seed(settings.seed)
    x0 = torch.rand(batch, 3, settings.size, settings.size, generator=generator).to(device)
    goal = torch.randint(1000, (batch,), generator=generator).to(device)
    context = RunnerContext(config=config, device=device, precision=precision, height=settings.size,
                            width=settings.size, threads=settings.threads, max_batch=batch,
                            channels_last=device.type == "cuda")
    if get_backend(backend).exported:  # the graph the parent exported; no torch modules in this process
        context.step_graph = lambda height, width: Path(onnx_path)
    else:
        context.classifier = freeze(bench_classifier(settings).to(device))
        context.through = freeze(make_through(config.through, config.seed).to(device))
    resolve_backend(backend, device, context.through, precision)  # the registry's reason, if it cannot run here
    runner = create_runner(backend, context)
    with runner:
        runner.infer(x0, goal)  # warm-up: lazy allocation, graph capture, kernel selection
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        calls, began = 0, time.perf_counter()
        while True:
            runner.infer(x0, goal)
            if device.type == "cuda":
                torch.cuda.synchronize()
            calls += 1
            elapsed = time.perf_counter() - began
            if elapsed >= settings.min_seconds:
                break
    peak_rss_mb = peak_rss_megabytes()
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    if backend == "onnxruntime" and device.type == "cuda":
        backend = "onnxruntime-cuda"
    return BenchResult(backend, precision, batch, batch * calls / elapsed, peak_rss_mb, elapsed, calls, peak_gpu)


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


def _child(queue: multiprocessing.Queue, info: BackendInfo, precision: str, batch: int, settings: BenchSettings,
           onnx: str | None) -> None:
    register_backend(info)  # the parent's entry: a backend registered at run time is known here too
    try:
        queue.put(("ok", asdict(_measure(info.name, precision, batch, settings, onnx))))
    except Exception as exc:  # reported to the parent as one line; the bench goes on with the next measurement
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def measure_in_subprocess(backend: str, precision: str, batch: int, settings: BenchSettings,
                          onnx_path: str | None) -> BenchResult:
    """One measurement in a fresh process; raises RuntimeError with the child's error."""
    info = get_backend(backend)  # an unknown name fails here, before a process is spawned
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, info, precision, batch, settings, onnx_path))
    process.start()
    try:
        status, payload = queue.get()
    finally:
        process.join()
    if status != "ok":
        raise RuntimeError(f"{backend} {precision} at batch {batch}: {payload}")
    return BenchResult(**payload)


def export_for_bench(settings: BenchSettings, cache_dir: str | os.PathLike | None) -> Path:
    """The step graph the exported backends run (exported once, cached like the Cloaker's)."""
    from comcloak.attacks import make_through
    from comcloak.engine.backends import StepGraphCache
    from comcloak.models import freeze

    config = settings.config
    classifier = freeze(bench_classifier(settings))
    through = freeze(make_through(config.through, settings.seed))
    graphs = StepGraphCache(classifier, through, cache_dir,
                            metadata={"classifier": config.classifier, "through": config.through},
                            loss=config.loss, eot=config.eot)
    return graphs.path_for(settings.size, settings.size)


def results_payload(
    results: list[BenchResult],
    settings: BenchSettings,
    flops_per_image: int | None = None,
    matmul: tuple[float, str] | None = None,
) -> dict:
    """The JSON document: ``{"machine", "results": [{"backend", "precision", "batch", "images_per_s",
    "peak_rss_mb"}], ...}``.

    GPU rows add ``peak_gpu_mb``; with ``flops_per_image`` and ``matmul`` (rate, dtype) every row adds
    ``fraction_of_matmul_rate`` and the document ``flops_per_image``, ``matmul_flops_per_s`` and ``matmul_dtype``.
    Results of several rounds (:attr:`BenchResult.round`) make one row per measurement: ``images_per_s`` is the
    median over the rounds, ``peak_rss_mb`` the largest, and the row adds ``images_per_s_rounds`` and
    ``vs_reference_rounds`` (the ratio to the reference measured in the same round, so that the machine's drift
    between rounds cancels); the document adds ``rounds``.
    """
    rounds = len({result.round for result in results})
    grouped: dict[tuple[str, str, int], list[BenchResult]] = {}
    for result in results:
        grouped.setdefault((result.backend, result.precision, result.batch), []).append(result)
    reference = {(result.batch, result.round): result.images_per_s for result in results
                 if (result.backend, result.precision) == REFERENCE}
    rows = []
    for (backend, precision, batch), group in grouped.items():
        speeds = [result.images_per_s for result in group]
        row = {"backend": backend, "precision": precision, "batch": batch,
               "images_per_s": round(statistics.median(speeds), 4),
               "peak_rss_mb": round(max(result.peak_rss_mb for result in group), 1)}
        gpu = [result.peak_gpu_mb for result in group if result.peak_gpu_mb is not None]
        if gpu:
            row["peak_gpu_mb"] = round(max(gpu), 1)
        if flops_per_image and matmul:
            row["fraction_of_matmul_rate"] = round(row["images_per_s"] * flops_per_image / matmul[0], 5)
        if rounds > 1:
            row["images_per_s_rounds"] = [round(speed, 4) for speed in speeds]
            row["vs_reference_rounds"] = [round(result.images_per_s / reference[batch, result.round], 4)
                                          for result in group if (batch, result.round) in reference]
        rows.append(row)
    config = settings.config
    draws = f", {config.eot.draws} draws/step ({config.eot.coded_draws} through the stand-in)" \
        if config.eot.enabled else ""
    strength = f"--strength {settings.strength}: " if settings.strength else ""
    payload = {
        "machine": machine_description(settings.device),
        "results": rows,
        "versions": library_versions(),
        "settings": asdict(settings),
        "workload": f"{strength}{config.classifier} through {config.through}, {config.method}, {config.steps} steps"
                    f"{draws}, {config.loss} loss",
    }
    if rounds > 1:
        payload["rounds"] = rounds
    if flops_per_image and matmul:
        payload.update(flops_per_image=flops_per_image, matmul_flops_per_s=round(matmul[0]), matmul_dtype=matmul[1])
    return payload


def markdown_table(payload: dict) -> str:
    """Markdown: machine and versions, then one row per measurement with its ratio to torch at the same batch."""
    reference = {row["batch"]: row["images_per_s"] for row in payload["results"]
                 if (row["backend"], row.get("precision", "fp32")) == REFERENCE}
    settings = payload.get("settings", {})
    versions = ", ".join(f"{name} {value}" for name, value in payload.get("versions", {}).items())
    weights = ", random weights" if settings.get("random_weights") else ""
    workload = payload.get("workload") or (
        f"{settings.get('classifier')} through {settings.get('through')}, {settings.get('attack')}, "
        f"{settings.get('steps')} steps")
    lines = [
        f"Machine: {payload['machine']}  ",
        f"Versions: {versions}  ",
        f"Workload: {workload}{weights}, {settings.get('size')}x{settings.get('size')}, "
        f"device {settings.get('device')}, threads {settings.get('threads') or 'default'}  ",
    ]
    if payload.get("rounds"):
        lines.append(f"Rounds: {payload['rounds']}, interleaved (every measurement once per round, in the same "
                     "order); images/s is the median over the rounds, the ratio the median of same-round ratios "
                     "(range in brackets)  ")
    floor = "flops_per_image" in payload
    if floor:
        lines.append(f"Floor: {payload['flops_per_image'] / 1e9:.2f} GFLOP per image (whole attack); measured "
                     f"{payload['matmul_dtype']} matmul rate {payload['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s  ")
    gpu = any("peak_gpu_mb" in row for row in payload["results"])
    header = "| backend | precision | batch | images/s | vs torch fp32 | peak RSS (MB) |"
    rule = "|---|---|---:|---:|---:|---:|"
    if gpu:
        header, rule = header + " peak GPU (MB) |", rule + "---:|"
    if floor:
        header, rule = header + " of matmul rate |", rule + "---:|"
    lines += ["", header, rule]
    for row in payload["results"]:
        base = reference.get(row["batch"])
        paired = row.get("vs_reference_rounds")
        if paired:  # several rounds: the median of the same-round ratios, and their range
            ratio = f"{statistics.median(paired):.2f}x ({min(paired):.2f}–{max(paired):.2f})"
        else:
            ratio = f"{row['images_per_s'] / base:.2f}x" if base else "–"
        line = (f"| {row['backend']} | {row.get('precision', 'fp32')} | {row['batch']} | {row['images_per_s']:.3f} "
                f"| {ratio} | {row['peak_rss_mb']:.0f} |")
        if gpu:
            line += f" {row['peak_gpu_mb']:.0f} |" if "peak_gpu_mb" in row else " – |"
        if floor:
            line += f" {100 * row['fraction_of_matmul_rate']:.1f}% |"
        lines.append(line)
    return "\n".join(lines) + "\n"
