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
from comcloak.attacks.config import PIXEL_SCALE, declared_settings

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
    # Declared attack settings given as options (by field name, user scale: (("budget", "texture"),)), winning over
    # the fields above and the preset: the bench's --eps, --draws, --stop-after, ... and a --variant's.
    given: tuple[tuple[str, Any], ...] = ()
    photos: tuple[str, ...] = ()  # --photos: attack these photos' working views (none: random size x size images)
    variant: str = ""  # the --variant's label ("": the command line's options, no --variant)

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

        given = dict(self.given)
        if self.strength is not None:  # the preset as comcloak cloak runs it, at this size and step count
            return preset_config(self.strength, **{"steps": self.steps, "attack_size": self.size, "seed": self.seed,
                                                   **given})
        return AttackConfig.from_user(**{**self.attack_settings(), **given})


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
    variant: str = ""  # the --variant's label
    steps_used: float | None = None  # --photos: the mean steps a photo used (the runner's infer_result)


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


def workload_text(settings: BenchSettings) -> str:
    """What is attacked, in words: the preset, surrogates, stand-in, method, steps, draws, loss, and the mechanisms of
    issue 26 that are on (budget, block draws, per-photo stopping, a growing budget)."""
    config = settings.config
    draws = f", {config.eot.draws} draws/step ({config.eot.coded_draws} through the stand-in)" \
        if config.eot.enabled else ""
    strength = f"--strength {settings.strength}: " if settings.strength else ""
    extra = [f"{config.budget} budget"] if config.budget != declared_default("budget") else []
    extra += [f"{name} {getattr(config.eot, name):g}" for name in ("bsr_rate", "sia_rate")
              if getattr(config.eot, name)]
    extra += [f"stop after {config.stop_after} at margin {config.stop_margin:g}"] if config.stop_after else []
    extra += [f"{config.step_rule} steps"] if config.step_rule != declared_default("step_rule") else []
    if config.ramped:
        extra += [f"eps from {config.eps_start * PIXEL_SCALE:g} over {config.eps_ramp or 'all'} steps"]
    return (f"{strength}{config.classifier} through {config.through}, {config.method}, {config.steps} steps{draws}, "
            f"{config.loss} loss" + "".join(f", {item}" for item in extra))


def _variant_figures(group: list[BenchResult], baseline: dict[tuple[str, str, int, int], float],
                     variants: bool) -> dict[str, Any]:
    """A row's figures of --photos (mean steps used, seconds per photo) and --variant (each round's time per image
    over the baseline variant's, same backend, precision, batch and round)."""
    row: dict[str, Any] = {}
    steps = [result.steps_used for result in group if result.steps_used is not None]
    if steps:
        row["steps_used"] = round(statistics.fmean(steps), 2)
        row["seconds_per_photo"] = round(statistics.median(1.0 / result.images_per_s for result in group), 4)
    if variants:
        row["vs_baseline_rounds"] = [
            round(baseline[key] / result.images_per_s, 4) for result in group
            if (key := (result.backend, result.precision, result.batch, result.round)) in baseline]
    return row


def results_payload(
    results: list[BenchResult],
    settings: BenchSettings,
    flops_per_image: int | None = None,
    matmul: tuple[float, str] | None = None,
    variants: list[BenchSettings] | None = None,
) -> dict:
    """The JSON document: ``{"machine", "results": [{"backend", "precision", "batch", "images_per_s",
    "peak_rss_mb"}], ...}``.

    GPU rows add ``peak_gpu_mb`` (the most the worker reserved on the device, capture included); with
    ``flops_per_image`` and ``matmul`` (rate, dtype) every row adds
    ``fraction_of_matmul_rate`` and the document ``flops_per_image``, ``matmul_flops_per_s`` and ``matmul_dtype``.
    Results of several rounds (:attr:`BenchResult.round`) make one row per measurement: ``images_per_s`` is the
    median over the rounds, ``peak_rss_mb`` the largest, and the row adds ``images_per_s_rounds`` and
    ``vs_reference_rounds`` (the ratio to the reference measured in the same round, so that the machine's drift
    between rounds cancels); the document adds ``rounds``. ``--photos`` rows add ``steps_used`` (mean per photo) and
    ``seconds_per_photo`` (median), the document ``photos``; ``variants`` (``--variant``, the first the baseline)
    add ``variant`` and ``vs_baseline_rounds`` to each row (time per image over the baseline's, same round) and
    ``variants`` (label: workload) to the document.
    """
    rounds = len({result.round for result in results})
    grouped: dict[tuple[str, str, str, int], list[BenchResult]] = {}
    for result in results:
        grouped.setdefault((result.variant, result.backend, result.precision, result.batch), []).append(result)
    reference = {(result.variant, result.batch, result.round): result.images_per_s for result in results
                 if (result.backend, result.precision) == REFERENCE}
    first = variants[0].variant if variants else ""
    baseline = {(result.backend, result.precision, result.batch, result.round): result.images_per_s
                for result in results if result.variant == first}
    rows = []
    for (variant, backend, precision, batch), group in grouped.items():
        speeds = [result.images_per_s for result in group]
        row = {"variant": variant} if variants else {}
        row.update(backend=backend, precision=precision, batch=batch,
                   images_per_s=round(statistics.median(speeds), 4),
                   peak_rss_mb=round(max(result.peak_rss_mb for result in group), 1))
        gpu = [result.peak_gpu_mb for result in group if result.peak_gpu_mb is not None]
        if gpu:
            row["peak_gpu_mb"] = round(max(gpu), 1)
        if flops_per_image and matmul:
            row["fraction_of_matmul_rate"] = round(row["images_per_s"] * flops_per_image / matmul[0], 5)
        if rounds > 1:
            row["images_per_s_rounds"] = [round(speed, 4) for speed in speeds]
            row["vs_reference_rounds"] = [round(result.images_per_s / reference[variant, batch, result.round], 4)
                                          for result in group if (variant, batch, result.round) in reference]
        row.update(_variant_figures(group, baseline, bool(variants)))
        rows.append(row)
    payload = {
        "machine": machine_description(settings.device),
        "results": rows,
        "versions": library_versions(),
        "settings": asdict(settings),
        "workload": workload_text(settings),
    }
    if settings.photos:
        payload["photos"] = list(settings.photos)
    if variants:
        payload["variants"] = {item.variant: workload_text(item) for item in variants}
    if rounds > 1:
        payload["rounds"] = rounds
    if flops_per_image and matmul:
        payload.update(flops_per_image=flops_per_image, matmul_flops_per_s=round(matmul[0]), matmul_dtype=matmul[1])
    return payload


def _ratio(paired: list[float] | None, single: float | None) -> str:
    """Several rounds: the median of the same-round ratios and their range; one: the ratio."""
    if paired and len(paired) > 1:
        return f"{statistics.median(paired):.2f}x ({min(paired):.2f}–{max(paired):.2f})"
    if paired:
        return f"{paired[0]:.2f}x"
    return f"{single:.2f}x" if single else "–"


def _header(payload: dict, settings: dict) -> list[str]:
    """The lines above the table: machine, versions, workload, photos, variants, rounds, floor."""
    versions = ", ".join(f"{name} {value}" for name, value in payload.get("versions", {}).items())
    weights = ", random weights" if settings.get("random_weights") else ""
    workload = payload.get("workload") or (
        f"{settings.get('classifier')} through {settings.get('through')}, {settings.get('attack')}, "
        f"{settings.get('steps')} steps")
    size = f"working views (shorter side {settings.get('size')})" if payload.get("photos") else \
        f"{settings.get('size')}x{settings.get('size')}"
    lines = [
        f"Machine: {payload['machine']}  ",
        f"Versions: {versions}  ",
        f"Workload: {workload}{weights}, {size}, device {settings.get('device')}, threads "
        f"{settings.get('threads') or 'default'}  ",
    ]
    if payload.get("photos"):
        lines.append(f"Photos: {len(payload['photos'])}, attacked one at a time (working views may differ in "
                     "size), goals their clean labels as comcloak cloak sets them; steps used: the mean per photo  ")
    for label, text in payload.get("variants", {}).items():
        lines.append(f"Variant {label}: {text}  ")
    if payload.get("variants"):
        lines.append(f"Time vs baseline: time per image over variant {next(iter(payload['variants']))}'s, same "
                     "backend, same round  ")
    if payload.get("rounds"):
        lines.append(f"Rounds: {payload['rounds']}, interleaved (every measurement once per round, in the same "
                     "order); images/s is the median over the rounds, the ratio the median of same-round ratios "
                     "(range in brackets)  ")
    if "flops_per_image" in payload:
        lines.append(f"Floor: {payload['flops_per_image'] / 1e9:.2f} GFLOP per image (whole attack); measured "
                     f"{payload['matmul_dtype']} matmul rate {payload['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s  ")
    return lines


def markdown_table(payload: dict) -> str:
    """Markdown: machine and versions, then one row per measurement with its ratio to torch at the same batch (of
    the same variant); ``--photos`` adds seconds per photo and the steps used, ``--variant`` the time vs the
    baseline variant."""
    rows = payload["results"]
    reference = {(row.get("variant", ""), row["batch"]): row["images_per_s"] for row in rows
                 if (row["backend"], row.get("precision", "fp32")) == REFERENCE}
    lines = _header(payload, payload.get("settings", {}))
    gpu = any("peak_gpu_mb" in row for row in rows)
    floor = "flops_per_image" in payload
    photos, variants = bool(payload.get("photos")), bool(payload.get("variants"))
    columns = [("variant", "---")] * variants + [("backend", "---"), ("precision", "---"), ("batch", "---:")]
    columns += [("s/photo", "---:")] * photos + [("photos/s" if photos else "images/s", "---:"),
                                                 ("vs torch fp32", "---:")]
    columns += [("time vs baseline", "---:")] * variants + [("steps used", "---:")] * photos
    columns += [("peak RSS (MB)", "---:")] + [("peak GPU reserved (MB)", "---:")] * gpu
    columns += [("of matmul rate", "---:")] * floor
    lines += ["", "| " + " | ".join(name for name, _ in columns) + " |", "|" + "|".join(r for _, r in columns) + "|"]
    for row in rows:
        base = reference.get((row.get("variant", ""), row["batch"]))
        cells = [row["variant"]] if variants else []
        cells += [row["backend"], row.get("precision", "fp32"), str(row["batch"])]
        cells += [f"{row['seconds_per_photo']:.3f}" if "seconds_per_photo" in row else "–"] * photos
        cells += [f"{row['images_per_s']:.3f}", _ratio(row.get("vs_reference_rounds"),
                                                         base and row["images_per_s"] / base)]
        cells += [_ratio(row.get("vs_baseline_rounds"), None)] if variants else []
        cells += [f"{row['steps_used']:.1f}" if "steps_used" in row else "–"] * photos
        cells += [f"{row['peak_rss_mb']:.0f}"]
        cells += [f"{row['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in row else "–"] * gpu
        cells += [f"{100 * row['fraction_of_matmul_rate']:.1f}%"] if floor else []
        lines.append("| " + " | ".join(cells) + " |")
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
