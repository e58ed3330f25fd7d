"""``comcloak cloak INPUT... -o OUTDIR``: cloak files or folders of photos."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from comcloak import defaults
from comcloak.cli.options import (
    add_attack_options,
    add_classifier_options,
    add_protection_options,
    add_runtime_options,
    build_cloaker,
    non_negative_float,
    positive_float,
    positive_int,
)
from comcloak.codecs.metadata import DEFAULT_METADATA, METADATA_POLICIES
from comcloak.engine.outputs import DEFAULT_OUTPUT_FORMAT, OUTPUT_FORMATS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cloak", help="cloak photos (files or folders)",
        description="Cloak photos so face recognition no longer matches the people in them and classifiers "
                    "mislabel them (--protect), also after recompression. Outputs keep the size and format family of "
                    "their inputs; inputs are never modified.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="photo files or folders (searched recursively)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the cloaked photos")
    parser.add_argument("--follow-symlinks", action="store_true",
                        help="descend into symlinked folders (loops are detected); default: list them as skipped")
    add_output_options(parser)
    add_protection_options(parser)
    add_attack_options(parser)
    add_classifier_options(parser, ensemble=True)
    add_runtime_options(parser)
    add_ray_options(parser)
    parser.set_defaults(run=run)


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale-out (Ray Data; the ray extra: pip install 'comcloak[ray]')")
    group.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="cloak on Ray: without ADDRESS a Ray runtime on this machine; 'auto' or HOST:PORT joins "
                            "a running cluster, ray://HOST:PORT through Ray Client. Same outputs (byte-identical at "
                            "the same torch thread count), manifest and resume as without --ray; on a cluster, inputs "
                            "and OUTDIR must be on a filesystem every node sees at the same path")
    group.add_argument("--ray-actors", default=None, metavar="MIN[,MAX]", type=_actor_range,
                       help="cloaking actors, each holding one Cloaker (default: 1 up to what the cluster's CPUs, or "
                            "GPUs with --ray-gpus-per-actor, allow)")
    group.add_argument("--ray-cpus-per-actor", type=positive_float, default=None, metavar="N",
                       help="CPUs each actor reserves; its torch threads (default 1)")
    group.add_argument("--ray-gpus-per-actor", type=non_negative_float, default=None, metavar="N",
                       help="GPUs each actor reserves (default 0; 1 on GPU clusters, a fraction to share one)")


def _actor_range(text: str) -> tuple[int, int | None]:
    parts = text.split(",")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1 or values[0] > values[-1]:
        raise argparse.ArgumentTypeError(f"expected MIN or MIN,MAX actors with 1 <= MIN <= MAX, got {text!r}")
    return values[0], values[1] if len(values) == 2 else None


def actor_pool(args: argparse.Namespace):
    """The :class:`~comcloak.engine.scale.ActorPool` of the ``--ray-*`` options; they need ``--ray``."""
    from comcloak.engine.scale import ActorPool
    from comcloak.errors import UserError

    given = [name for name in ("ray_actors", "ray_cpus_per_actor", "ray_gpus_per_actor")
             if getattr(args, name) is not None]
    if args.ray is None:
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} applies to a Ray run; add --ray")
        return None
    low, high = args.ray_actors or (1, None)
    return ActorPool(min_actors=low, max_actors=high, cpus_per_actor=args.ray_cpus_per_actor or 1.0,
                     gpus_per_actor=args.ray_gpus_per_actor or 0.0)


def add_output_options(parser: argparse.ArgumentParser, overwrite_option: bool = True) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--check", default=defaults.CHECK_CODEC, metavar="CODEC",
                       help=f"platform profile or codec chain the closing table checks each cloak after, in the "
                            f"attacker's 256/224 crop view (default {defaults.CHECK_CODEC}; 'none' for no codec), "
                            "e.g. instagram, resize:2048+jpeg:85")
    group.add_argument("--batch-size", type=positive_int, default=defaults.BATCH_SIZE,
                       help=f"photos attacked together (default {defaults.BATCH_SIZE})")
    group.add_argument("--jpeg-quality", type=positive_int, default=defaults.JPEG_QUALITY,
                       help=f"quality of JPEG outputs, 4:4:4 chroma (default {defaults.JPEG_QUALITY})")
    group.add_argument("--metadata", default=DEFAULT_METADATA, choices=METADATA_POLICIES,
                       help="EXIF/XMP of the cloaked files: keep-safe (default: capture date, camera make and model, "
                            "copyright; no GPS, serial numbers, MakerNote, XMP), strip (none) or keep (all); in every "
                            "policy the orientation is reset (pixels are upright) and the EXIF thumbnail, which "
                            "would show the uncloaked photo, is dropped; the colour profile is kept")
    group.add_argument("--format", default=DEFAULT_OUTPUT_FORMAT, choices=tuple(OUTPUT_FORMATS),
                       help="format of the cloaked files: keep (default: JPEG, PNG, WebP, TIFF and BMP stay "
                            "themselves; HEIC, AVIF, GIF and others become PNG), or jpeg, png, webp for all")
    if overwrite_option:
        group.add_argument("--overwrite", action="store_true",
                           help="redo every photo and replace existing outputs (default: photos the folder's manifest "
                                "says are done with the same settings are kept; other existing files are skipped)")
    group.add_argument("--report", metavar="FILE.json",
                       help="write a JSON record per input (the whole archive, resumed photos included)")
    group.add_argument("--wait", action="store_true",
                       help="if another comcloak run is writing to the output folder, wait for it (default: stop)")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bar and no table (failures are still printed to stderr)")


def run(args: argparse.Namespace) -> int:
    from comcloak.codecs import parse_codec
    from comcloak.codecs.photos import collect_inputs
    from comcloak.engine.archive import check_report_path, check_writable
    from comcloak.engine.outputs import plan_outputs, refuse_links_to_output
    from comcloak.errors import UserError

    archive_options(args)  # a bad --jpeg-quality or --metadata stops here
    pool = actor_pool(args)  # --ray-* without --ray stops here
    check_codec = parse_codec(args.check)
    check_codec.apply(np.zeros((16, 16, 3), np.uint8))  # an unavailable codec (AVIF) fails now, not mid-run
    collected = collect_inputs(args.inputs, follow_symlinks=args.follow_symlinks)
    if not collected.pairs:
        skipped = f" ({len(collected.skipped)} skipped: {collected.skipped[0].path}: {collected.skipped[0].reason}" \
                  f"{', ...' if len(collected.skipped) > 1 else ''})" if collected.skipped else ""
        raise UserError(f"no photos found in {', '.join(args.inputs)}{skipped}")
    output_dir = Path(args.output)
    refuse_links_to_output(collected.links, output_dir, args.inputs)
    plan = plan_outputs(collected.pairs, output_dir, args.inputs, args.format)
    # Every path the run writes is checked before the first photo is cloaked: exit 2 means nothing was done.
    check_writable(output_dir, folder=True)
    if args.report:
        check_writable(Path(args.report))
        check_report_path(Path(args.report), args.inputs, plan, output_dir)
    if pool is not None:
        return cloak_on_ray(plan, collected.skipped, output_dir, check_codec, pool, args)
    cloaker = build_cloaker(args)
    cloaker.load_face_models()  # a missing face-model package: one line, exit 2, before any photo
    return cloak_and_report(cloaker, plan, collected.skipped, output_dir, check_codec, args)


def cloak_on_ray(plan, skipped, output_dir: Path, check_codec, pool, args: argparse.Namespace) -> int:
    """``--ray``: the archive on Ray Data (:mod:`comcloak.engine.scale`), reported as without it. A job that stops
    midway exits 1 with one line; what finished is recorded and a rerun resumes."""
    from comcloak.cli.options import cloaker_spec
    from comcloak.engine.scale import RayJobError, import_ray, run_archive_on_ray
    from comcloak.errors import UserError

    if args.ray != "local" and Path(args.ray).exists():
        raise UserError(f"--ray took {args.ray!r} as the cluster's address; put --ray after the inputs, or name the "
                        "address (--ray local, --ray auto)")
    import_ray()  # no Ray: one line, exit 2, before the runtime starts
    spec = cloaker_spec(args)  # a bad attack option stops here, not on each actor

    def run_here(done, batch_start):
        return run_archive_on_ray(spec, plan, skipped, output_dir, archive_options(args), pool, on_photo_done=done,
                                  address=args.ray)

    try:
        return report_archive(spec, run_here, plan, check_codec, args)
    except RayJobError as error:
        print(f"comcloak cloak: {error}", file=sys.stderr)
        return 1


def archive_options(args: argparse.Namespace):
    """The :class:`~comcloak.engine.archive_options.ArchiveOptions` of the output options (``--check``, ``--format``,
    ``--jpeg-quality``, ``--metadata``, ``--batch-size``, ``--overwrite``, ``--wait``)."""
    from comcloak.codecs.photos import WriteOptions
    from comcloak.engine.archive_options import ArchiveOptions

    return ArchiveOptions(check=args.check, output_format=args.format,
                          write=WriteOptions(jpeg_quality=args.jpeg_quality, metadata=args.metadata),
                          batch_size=args.batch_size, overwrite=args.overwrite, wait=args.wait)


@contextmanager
def heartbeat(bar, seconds: float = 1.0) -> Iterator[None]:
    """Redraw ``bar`` every ``seconds`` while the block runs, so its clock moves during a long batch (the count only
    moves when photos finish)."""
    import threading

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(seconds):
            bar.refresh()

    thread = threading.Thread(target=beat, daemon=True)
    if not bar.disable and sys.stderr.isatty():  # a log file gets the bar's own updates only
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()


def cloak_and_report(cloaker, plan, skipped, output_dir: Path, check_codec, args: argparse.Namespace) -> int:
    """Run the archive in this process with a progress bar, print the table (failures also with -q), write the
    report; exit 1 if any photo failed."""
    from comcloak.engine.archive import run_archive

    def run_here(done, batch_start):
        return run_archive(cloaker, plan, skipped, output_dir, archive_options(args), on_photo_done=done,
                           on_batch_start=batch_start)

    return report_archive(cloaker, run_here, plan, check_codec, args)


def batch_word(protection, photos: int, shape: tuple[int, int]) -> str:
    """What the progress bar says while a batch is cloaked: the classifier's attack view only when objects are
    cloaked (a faces-only cloak works on each face's own region, not on that view)."""
    count = f"{photos} photo{'s' if photos > 1 else ''}"
    if not protection.objects:
        return f"cloaking the faces of {count}"
    view = f"{count} at {shape[0]}x{shape[1]}"
    return f"cloaking the faces, then {view}" if protection.faces else f"cloaking {view}"


def report_archive(cloaker, run_archive, plan, check_codec, args: argparse.Namespace) -> int:
    """``run_archive(on_photo_done, on_batch_start)`` under a progress bar, then the table and the report, for
    ``cloaker`` (a ``Cloaker`` or the ``CloakerSpec`` each Ray actor builds)."""
    from tqdm import tqdm

    from comcloak.engine.report import format_table, reason_line, write_report
    from comcloak.errors import UserError

    planned = {str(item.source) for item in plan}
    with tqdm(total=len(plan), unit="photo", disable=args.quiet, file=sys.stderr, dynamic_ncols=True) as bar, \
            heartbeat(bar):
        def done(record) -> None:
            if record.source in planned:  # the bar counts photos; skipped non-photos are listed in the table
                bar.update(1)

        def batch_start(photos: int, shape: tuple[int, int]) -> None:
            bar.set_postfix_str(batch_word(cloaker.protection, photos, shape))

        records = run_archive(done, batch_start)
    if args.quiet:
        for record in records:
            if record.status == "failed":
                print(reason_line(record), file=sys.stderr)
    else:
        print(repr(cloaker))
        names = {str(item.source): item.relative.name for item in plan}  # a symlink's own name, not its target's
        print(format_table(records, check_codec.spec, names, show_steps=bool(cloaker.config.stop_after)))
    if args.report:
        settings = {key: value for key, value in vars(args).items() if key != "run"}
        settings.update(archive_options(args).settings(cloaker))  # the attack as run (eps, alpha on the [0, 1] scale)
        settings["config"] = asdict(cloaker.config)  # every setting: the hash leaves a uniform budget's out
        try:
            write_report(records, Path(args.report), settings)
        except OSError as error:  # a full disk after the run: the photos and the manifest are done
            raise UserError(f"cannot write the report {args.report}: {error.strerror or error}") from None
    return 1 if any(record.status == "failed" for record in records) else 0
