"""``comcloak bench``: images/s and peak memory of the attack backends, ratios to the torch reference; with
``--workload faces``, seconds per face of the face cloak's loop on torch and onnxruntime
(``engine/face_throughput``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from comcloak.attacks.presets import PRESETS, STRENGTHS
from comcloak.cli.options import (
    add_classifier_options,
    add_device_option,
    add_setting,
    given_settings,
    offered,
    positive_int,
)
from comcloak.engine.backends.registry import PRECISIONS, backend_names

FACE_SAMPLE = "samples/astronaut.jpg"  # --workload faces' default --photos


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure cloaking throughput and memory per backend",
        description="Cloak random 224x224 images (or --photos, one at a time) with each backend and batch size "
                    "(and each --variant), each measurement in its own process; report images/s, peak memory, the "
                    "ratio to eager fp32 torch of the same run, and the fraction of the device's measured matmul "
                    "rate reached (FLOPs per image from torch.utils.flop_counter).")
    parser.add_argument("--backends", default="torch,torch-per-image,onnxruntime",
                        help=f"comma-separated, the names of --backend: {', '.join(backend_names())} (default "
                             "torch,torch-per-image,onnxruntime); each is measured at every --precision it offers, "
                             "or at one with NAME@PRECISION (torch@fp32)")
    parser.add_argument("--precision", default="fp32",
                        help=f"comma-separated: {', '.join(PRECISIONS)} (default fp32); torch fp32 is the reference "
                             "of the ratios")
    parser.add_argument("--batch", default="1,8,32",
                        help="comma-separated batch sizes (default 1,8,32); --photos attacks one photo at a time")
    add_setting(add_classifier_options(parser, command="bench"), "through")
    parser.add_argument("--random-weights", action="store_true",
                        help="time the classifier with random weights (speed does not depend on them; resnet50 "
                             "ships none)")
    add_variant_options(parser)
    parser.add_argument("--variant", action="append", default=None, metavar="LABEL=OPTIONS",
                        help="time several configurations in one run, each in its own process per backend, taking "
                             "turns per round: OPTIONS are this command's attack options (--strength, --steps, "
                             "--size, --eps, --budget, --stop-after, ...), winning over the command line's; repeat "
                             "it; the first is the baseline of the reported time ratios, e.g. --variant "
                             "'today=--strength balanced' --variant 'new=--strength balanced --budget texture'")
    add_device_option(parser, "cpu")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads per backend (default all)")
    parser.add_argument("--min-seconds", type=float, default=5.0, help="time calls for at least this long (default 5)")
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="time every backend this many times, taking turns (each prepared once, in its own "
                             "process), and report medians and the ratios to torch paired within each round, so "
                             "that the machine's drift cancels (default 1)")
    parser.add_argument("--json", metavar="OUT", required=True, help="results JSON (bench/results/NAME.json)")
    parser.add_argument("--markdown", metavar="OUT.md", default=None,
                        help="markdown table (default: the JSON path with .md)")
    parser.add_argument("--cache-dir", metavar="DIR", default=None, help="step-graph cache (default ~/.cache/comcloak)")
    faces = parser.add_argument_group("faces", "--workload faces: the face cloak's loop (issue 25), per face")
    faces.add_argument("--workload", choices=("classifier", "faces"), default="classifier",
                       help="classifier: the classifier cloak on random images, or on --photos (default); faces: "
                            "the face cloak's whole loop on each face of --photos, torch and onnxruntime (seconds "
                            "per face, faces/s, the ratio to torch, peak RSS, and how many 8-bit pixels of the "
                            "composed cloaks differ)")
    faces.add_argument("--photos", default=None,
                       help="comma-separated photos or folders (searched recursively). classifier: attack their "
                            "working views (shorter side --size, aspect kept), one photo at a time, goals their "
                            "clean labels as comcloak cloak sets them, and report seconds per photo and the steps "
                            f"used (default: random images); faces: photos with faces (default {FACE_SAMPLE})")
    faces.add_argument("--face-preset", default="faces", help="the face preset timed (default faces)")
    faces.add_argument("--faces", type=positive_int, default=4, help="time at most this many faces (default 4)")
    parser.set_defaults(run=run)


def add_variant_options(parser: argparse.ArgumentParser) -> None:
    """The attack options of the bench and of each ``--variant`` (one parser code for both): ``--strength``,
    ``--size`` and the attack settings declared for ``bench`` (``--steps``, ``--eps``, ``--draws``, ``--budget``,
    ``--stop-after``, ...), each option built from its declaration."""
    group = parser.add_argument_group("attack")
    group.add_argument("--strength", default=None, choices=STRENGTHS,
                       help="time a preset as comcloak cloak --strength runs it (its surrogates, stand-in, eps, "
                            "draws and loss; the attack options given still apply; --classifier and --through do "
                            "not); default: none, the plain attack of --classifier through --through")
    add_setting(group, "attack_size", "--strength", flag="--size", help="image side: the attack (working) view")
    for entry in offered("bench"):
        if entry.keyword != "through":  # None: not given, so the preset's value (or the declared default) applies
            add_setting(group, entry.keyword, "--strength", default=None)


class VariantParser(argparse.ArgumentParser):
    """The parser of one ``--variant``'s OPTIONS: an error is one line (a UserError: exit status 2)."""

    def error(self, message: str):  # -> NoReturn
        from comcloak.errors import UserError

        raise UserError(f"{self.prog}: {message}")


def variant_settings(args: argparse.Namespace, text: str):
    """The :class:`~comcloak.engine.bench_results.BenchSettings` of ``--variant LABEL=OPTIONS``: the command line's
    options with OPTIONS (parsed by :func:`add_variant_options`' parser) winning."""
    import shlex

    from comcloak.errors import UserError

    label, equals, options = text.partition("=")
    label = label.strip()
    if not equals or not label:
        raise UserError(f"--variant takes LABEL=OPTIONS (--variant 'today=--strength balanced'), got {text!r}")
    parser = VariantParser(prog=f"--variant {label}", add_help=False)
    add_variant_options(parser)
    try:
        tokens = shlex.split(options)
    except ValueError as error:
        raise UserError(f"--variant {label}: {error}") from None
    return bench_settings(parser.parse_args(tokens, namespace=argparse.Namespace(**vars(args))), label)


def _int_list(text: str, what: str) -> list[int]:
    from comcloak.errors import UserError

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{what} must be comma-separated positive integers, got {text!r}")
    return values


def bench_settings(args: argparse.Namespace, variant: str = ""):
    """The :class:`~comcloak.engine.bench_results.BenchSettings` of the options: each declared attack setting as
    given, else the ``--strength`` preset's, else its declared default; ``variant``: the ``--variant``'s label."""
    from comcloak.attacks.config import declared_settings
    from comcloak.engine.bench_results import SIZE_KEYWORD, BenchSettings

    declared = declared_settings()
    preset = PRESETS[args.strength] if args.strength is not None else None
    attack = {}
    for item in fields(BenchSettings):
        keyword = SIZE_KEYWORD.get(item.name, item.name)
        if keyword not in declared or keyword == "strength" or not hasattr(args, item.name):
            continue
        value = getattr(args, item.name)
        if value is None and preset is not None:
            value = getattr(preset, declared[keyword].name, None)
        if value is not None:
            attack[item.name] = value
    # Every attack option given wins over the preset and the fields (--eps, --draws, --budget, --stop-after, ...).
    # A flag not set (--targeted) is not given; --target implies --targeted, as on comcloak cloak.
    given = {name: value for name, value in given_settings(args, "bench", "attack").items()
             if name not in ("steps", "through") and value is not False}
    if given.get("target") is not None:
        given["targeted"] = True
    photos = face_photos(args.photos) if args.photos and args.workload == "classifier" else ()
    return BenchSettings(**attack, device=args.device, threads=args.threads, min_seconds=args.min_seconds,
                         random_weights=args.random_weights, strength=args.strength, given=tuple(given.items()),
                         photos=photos,
                         variant=variant)


def face_photos(text: str) -> tuple[str, ...]:
    """The photos of ``--photos``: files as given, folders' photos (recursively, sorted)."""
    from pathlib import Path

    from comcloak.codecs.photos import PHOTO_EXTENSIONS
    from comcloak.errors import UserError

    found: list[str] = []
    for part in (item.strip() for item in text.split(",") if item.strip()):
        path = Path(part)
        if path.is_dir():
            found += sorted(str(item) for item in path.rglob("*") if item.suffix.lower() in PHOTO_EXTENSIONS)
        elif path.is_file():
            found.append(str(path))
        else:
            raise UserError(f"--photos: {part} is neither a photo nor a folder")
    if not found:
        raise UserError(f"--photos {text!r} holds no photo")
    return tuple(found)


def run_faces(args: argparse.Namespace) -> int:
    """``--workload faces``: torch and onnxruntime (those of --backends) on the faces of --photos."""
    from comcloak.attacks.faces.settings import FACE_PRESETS
    from comcloak.engine.bench_results import write_results
    from comcloak.engine.face_throughput import (
        FACE_BACKENDS,
        FaceBenchSettings,
        export_face_graph,
        face_table,
        measure_faces,
    )
    from comcloak.errors import UserError

    if args.face_preset not in FACE_PRESETS:
        raise UserError(f"unknown --face-preset {args.face_preset!r}; available: {', '.join(FACE_PRESETS)}")
    asked = [entry.strip().partition("@")[0] for entry in args.backends.split(",") if entry.strip()]
    backends = tuple(name for name in FACE_BACKENDS if name in asked)
    if not backends:
        raise UserError(f"--workload faces measures {', '.join(FACE_BACKENDS)}; --backends names none of them")
    settings = FaceBenchSettings(face_photos(args.photos or FACE_SAMPLE), args.face_preset, args.faces,
                                 steps=args.steps, threads=args.threads, cache_dir=args.cache_dir)
    if "onnxruntime" in backends:
        print("exporting the face step graph ...", file=sys.stderr)
        export_face_graph(settings)
    payload = measure_faces(settings, backends, args.rounds, report=lambda line: print(line, file=sys.stderr))
    if not payload["results"]:
        raise UserError("no backend could be measured")
    table = face_table(payload)
    write_results(payload, args.json, table, args.markdown)
    print(table)
    return 0


def _measurements(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (backend, precision) pairs of ``--backends`` and ``--precision`` (NAME@PRECISION pins one)."""
    from comcloak.engine.backends.registry import get_backend
    from comcloak.errors import UserError

    entries = [entry.strip().partition("@") for entry in args.backends.split(",") if entry.strip()]
    unknown = [name for name, _, _ in entries if name not in backend_names()]
    if unknown or not entries:
        raise UserError(f"unknown backend {', '.join(unknown) or '(none)'}; available: {', '.join(backend_names())}")
    precisions = [name.strip() for name in args.precision.split(",") if name.strip()]
    pinned = {precision for _, at, precision in entries if at}
    if not precisions or (set(precisions) | pinned) - set(PRECISIONS):
        raise UserError(f"--precision and NAME@PRECISION take {', '.join(PRECISIONS)}, got "
                        f"{args.precision!r} / {args.backends!r}")
    measurements = []
    for backend, at, own in entries:
        for precision in [own] if at else precisions:
            if precision in get_backend(backend).precisions:
                measurements.append((backend, precision))
            else:
                print(f"skipped: {backend} {precision}: {backend} runs in "
                      f"{', '.join(get_backend(backend).precisions)}", file=sys.stderr)
    return measurements


def _variants(args: argparse.Namespace) -> list:
    """The configurations timed: each ``--variant``'s, or the command line's; checked before any work."""
    from comcloak.engine.bench_results import BenchSettings
    from comcloak.errors import UserError

    variants = [variant_settings(args, text) for text in args.variant] if args.variant else [bench_settings(args)]
    labels = [variant.variant for variant in variants]
    if len(set(labels)) < len(labels):
        raise UserError(f"--variant labels must differ, got {', '.join(labels)}")
    for variant in variants:
        named = f"--variant {variant.variant}: " if variant.variant else ""
        if variant.strength is not None and (variant.classifier, variant.through) != (BenchSettings.classifier,
                                                                                      BenchSettings.through):
            raise UserError(f"{named}--strength sets the surrogates and the stand-in; drop --classifier/--through")
        if variant.config.stop_after and not variant.photos:
            raise UserError(f"{named}--stop-after needs --photos: random images have random goals, so every image "
                            "would stop at once and the timing would mean nothing")
    return variants


def _jobs(args: argparse.Namespace, variants: list, measurements: list[tuple[str, str]]) -> list[list]:
    """The measurements of each batch (--photos: one, at batch 1), every variant x backend; the step graphs each
    exported backend runs are exported here, once."""
    from comcloak.engine.backends.registry import get_backend
    from comcloak.engine.photo_bench import photo_work
    from comcloak.engine.throughput import Job, export_for_bench

    exported = any(get_backend(name).exported for name, _ in measurements)
    if exported:
        print("exporting the step graph(s) ...", file=sys.stderr)
    if variants[0].photos:
        work = {variant.variant: photo_work(variant, args.cache_dir, exported) for variant in variants}
        return [[Job(backend, precision, 1, variant, None, work[variant.variant])
                 for variant in variants for backend, precision in measurements]]
    graphs = {variant.variant: str(export_for_bench(variant, args.cache_dir)) if exported else None
              for variant in variants}
    return [[Job(backend, precision, batch, variant, graphs[variant.variant])
             for variant in variants for backend, precision in measurements]
            for batch in _int_list(args.batch, "--batch")]


def run(args: argparse.Namespace) -> int:
    from comcloak.engine.bench_results import markdown_table, results_payload, write_results
    from comcloak.engine.throughput import attack_flops_per_image, measure_jobs, measure_matmul_rate
    from comcloak.errors import UserError

    if args.workload == "faces":
        return run_faces(args)
    measurements = _measurements(args)
    variants = _variants(args)
    results = []
    for jobs in _jobs(args, variants, measurements):
        results += measure_jobs(jobs, args.rounds, report=lambda line: print(line, file=sys.stderr))
    if not results:
        raise UserError("no backend could be measured")
    settings = variants[0]
    flops = matmul = None
    if len(variants) == 1 and not settings.photos:  # the floor of one configuration on square random images
        flops = attack_flops_per_image(settings)
        matmul = measure_matmul_rate(settings.device)
        print(f"floor: {flops / 1e9:.2f} GFLOP per image, {matmul[1]} matmul {matmul[0] / 1e12:.2f} TFLOP/s",
              file=sys.stderr)
    payload = results_payload(results, settings, flops, matmul, variants if args.variant else None)
    table = markdown_table(payload)
    write_results(payload, args.json, table, args.markdown)
    print(table)
    return 0
