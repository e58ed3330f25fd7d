"""What ``comcloak bench`` measures and reports: its settings (the attack's derived from the setting declarations
on :class:`~comcloak.attacks.config.AttackConfig`), one measurement's result, the JSON document and the markdown table
(the workers that measure are :mod:`comcloak.engine.throughput`). Torch-free."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from comcloak.atomic import atomic_writer, write_json
from comcloak.attacks.config import declared_settings

REFERENCE = ("torch", "fp32")  # eager fp32: the ratios' denominator
SIZE_KEYWORD = {"size": "attack_size"}  # BenchSettings' (and --size's) name for the declared setting


def declared_default(keyword: str) -> Any:
    """A setting's default on the user's scale, from its declaration (``eps`` -> 5.0)."""
    return declared_settings()[keyword].user_default


@dataclass(frozen=True)
class BenchSettings:
    """What one bench run measures (JSON ``settings``); :attr:`config` is the attack it times.

    The attack's fields are declared settings by their keywords (``attack``, ``eps`` on 0-255, ``steps``, ...;
    ``size`` is ``attack_size``), their defaults the declarations'; the others are the bench's own.
    """

    classifier: str = declared_default("classifier")
    through: str = declared_default("through")
    attack: str = declared_default("attack")
    eps: float = declared_default("eps")  # 0-255 scale
    steps: int = declared_default("steps")
    size: int = declared_default("attack_size")  # the random images' side: the attack (working) view
    classifier_weights: str | None = declared_default("classifier_weights")
    device: str = "cpu"
    threads: int | None = None
    min_seconds: float = 5.0  # keep timing calls until this much time has passed (at least one call)
    seed: int = declared_default("seed")
    random_weights: bool = False  # speed only: classifiers without shipped weights (resnet50)
    strength: str | None = None  # a preset (comcloak.attacks.presets): its surrogates, stand-in, eps, draws, loss

    def attack_settings(self) -> dict[str, Any]:
        """The declared settings among the fields, by field name (``method``), less those the attack ignores
        (fgsm takes one step)."""
        declared = declared_settings()
        values = {SIZE_KEYWORD.get(name, name): value for name, value in asdict(self).items()}
        return {declared[keyword].name: value for keyword, value in values.items()
                if keyword in declared and keyword != "strength"
                and declared[keyword].setting.applies_to(self.attack)}

    @property
    def config(self):  # -> AttackConfig
        from comcloak.attacks import AttackConfig
        from comcloak.attacks.presets import preset_config

        if self.strength is not None:  # the preset as comcloak cloak runs it, at this size and step count
            return preset_config(self.strength, steps=self.steps, attack_size=self.size, seed=self.seed)
        return AttackConfig.from_user(**self.attack_settings())


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


def results_payload(
    results: list[BenchResult],
    settings: BenchSettings,
    flops_per_image: int | None = None,
    matmul: tuple[float, str] | None = None,
) -> dict:
    """The JSON document: ``{"machine", "results": [{"backend", "precision", "batch", "images_per_s",
    "peak_rss_mb"}], ...}``.

    GPU rows add ``peak_gpu_mb`` (the most the worker reserved on the device, capture included); with
    ``flops_per_image`` and ``matmul`` (rate, dtype) every row adds
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
        header, rule = header + " peak GPU reserved (MB) |", rule + "---:|"
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


def write_results(payload: dict, json_path: str | os.PathLike, table: str,
                  markdown: str | os.PathLike | None = None) -> Path:
    """``payload`` as JSON at ``json_path`` and ``table`` as markdown at ``markdown`` (default: beside it, with
    ``.md``), each written atomically; returns the markdown's path."""
    write_json(payload, json_path)
    destination = Path(markdown) if markdown else Path(json_path).with_suffix(".md")
    with atomic_writer(destination) as handle:
        handle.write(table.encode())
    return destination
