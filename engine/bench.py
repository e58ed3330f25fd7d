"""Throughput and memory of the attack backends, each measured in its own process (``comcloak bench``).

Every (backend, batch) pair runs in a fresh ``spawn``ed process, so its peak resident memory (``ru_maxrss``) is
its own and no backend warms caches for another. The parent exports the step graph once (the exported backends
load it from disk, as they would from the cache) and writes the results as JSON and a markdown table whose
speed-ups are ratios to the ``torch`` reference measured in the same run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

BENCH_BACKENDS = ("torch", "torch-per-image", "onnxruntime", "tensorrt")
REFERENCE_BACKEND = "torch"


@dataclass(frozen=True)
class BenchSettings:
    classifier: str = "efficientnet_lite0"
    through: str = "comodel:jpeg:50"
    attack: str = "mim"
    eps: float = 5.0
    steps: int = 10
    size: int = 224
    device: str = "cpu"
    threads: int | None = None
    min_seconds: float = 5.0  # keep timing calls until this much time has passed (at least one call)
    seed: int = 0


@dataclass
class BenchResult:
    backend: str
    batch: int
    images_per_s: float
    peak_rss_mb: float
    seconds: float
    calls: int
    peak_gpu_mb: float | None = None


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


def _measure(backend: str, batch: int, settings: BenchSettings, onnx_path: str | None) -> BenchResult:
    """Runs in the child process: build the runner, warm up, time calls."""
    import torch

    from comcloak.attacks import attack_config, make_through
    from comcloak.engine.backends import OnnxRuntimeRunner, PerImageTorchRunner, TensorRTRunner, TorchRunner
    from comcloak.engine.cloaker import load_classifier
    from comcloak.models import freeze

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    config = attack_config(settings.attack, settings.eps / 255, settings.steps if settings.attack != "fgsm" else None)
    generator = torch.Generator().manual_seed(settings.seed)
    x0 = torch.rand(batch, 3, settings.size, settings.size, generator=generator).to(device)
    goal = torch.randint(1000, (batch,), generator=generator).to(device)
    if backend in ("torch", "torch-per-image"):
        classifier = freeze(load_classifier(settings.classifier).to(device))
        through = freeze(make_through(settings.through, settings.seed).to(device))
        runner_type = TorchRunner if backend == "torch" else PerImageTorchRunner
        runner = runner_type(classifier, through, config)
    elif backend == "onnxruntime":
        runner = OnnxRuntimeRunner(onnx_path, config, device=device, threads=settings.threads)
    elif backend == "tensorrt":
        runner = TensorRTRunner(onnx_path, config, device=device, max_batch=max(batch, 1))
    else:
        raise ValueError(f"unknown bench backend {backend!r}; available: {', '.join(BENCH_BACKENDS)}")
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
    return BenchResult(backend, batch, batch * calls / elapsed, peak_rss_mb, elapsed, calls, peak_gpu)


def _child(queue: multiprocessing.Queue, backend: str, batch: int, settings: BenchSettings, onnx: str | None) -> None:
    try:
        queue.put(("ok", asdict(_measure(backend, batch, settings, onnx))))
    except Exception as exc:  # reported to the parent as one line; the bench goes on with the next measurement
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def measure_in_subprocess(backend: str, batch: int, settings: BenchSettings, onnx_path: str | None) -> BenchResult:
    """One measurement in a fresh process; raises RuntimeError with the child's error."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, backend, batch, settings, onnx_path))
    process.start()
    try:
        status, payload = queue.get()
    finally:
        process.join()
    if status != "ok":
        raise RuntimeError(f"{backend} at batch {batch}: {payload}")
    return BenchResult(**payload)


def export_for_bench(settings: BenchSettings, cache_dir: str | os.PathLike | None) -> Path:
    """The step graph the exported backends run (exported once, cached like the Cloaker's)."""
    from comcloak.attacks import make_through
    from comcloak.engine.backends import StepGraphCache
    from comcloak.engine.cloaker import load_classifier
    from comcloak.models import freeze

    classifier = freeze(load_classifier(settings.classifier))
    through = freeze(make_through(settings.through, settings.seed))
    graphs = StepGraphCache(classifier, through, cache_dir,
                            metadata={"classifier": settings.classifier, "through": settings.through})
    return graphs.path_for(settings.size, settings.size)


def results_payload(results: list[BenchResult], settings: BenchSettings) -> dict:
    """The JSON document: ``{"machine", "results": [{"backend", "batch", "images_per_s", "peak_rss_mb"}], ...}``."""
    rows = []
    for result in results:
        row = {"backend": result.backend, "batch": result.batch, "images_per_s": round(result.images_per_s, 4),
               "peak_rss_mb": round(result.peak_rss_mb, 1)}
        if result.peak_gpu_mb is not None:
            row["peak_gpu_mb"] = round(result.peak_gpu_mb, 1)
        rows.append(row)
    return {
        "machine": machine_description(settings.device),
        "results": rows,
        "versions": library_versions(),
        "settings": asdict(settings),
    }


def markdown_table(payload: dict) -> str:
    """Markdown: machine and versions, then one row per measurement with its ratio to torch at the same batch."""
    reference = {row["batch"]: row["images_per_s"] for row in payload["results"] if row["backend"] == REFERENCE_BACKEND}
    settings = payload.get("settings", {})
    versions = ", ".join(f"{name} {value}" for name, value in payload.get("versions", {}).items())
    lines = [
        f"Machine: {payload['machine']}  ",
        f"Versions: {versions}  ",
        f"Workload: {settings.get('classifier')} through {settings.get('through')}, {settings.get('attack')}, "
        f"{settings.get('steps')} steps, {settings.get('size')}x{settings.get('size')}, device "
        f"{settings.get('device')}, threads {settings.get('threads') or 'default'}",
        "",
        "| backend | batch | images/s | vs torch | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in payload["results"]:
        base = reference.get(row["batch"])
        ratio = f"{row['images_per_s'] / base:.2f}x" if base else "–"
        lines.append(f"| {row['backend']} | {row['batch']} | {row['images_per_s']:.3f} | {ratio} | "
                     f"{row['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"
