"""``comcloak train``: train a ComModel to imitate a codec (simulated locally) or a platform (real pairs).

Photos are split by name into training and held-out thirds (``comcloak.codecs.pairs.split_held_out``), so the
validation MAE printed during training and stored in the output header is on photos the model never saw.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from comcloak.cli.options import positive_int

if TYPE_CHECKING:
    from comcloak.codecs import Codec
    from comcloak.codecs.pairs import PairSet
    from comcloak.models.training import TrainProgress

ARCHITECTURES = ("comodel_tc", "comodel_tc_tiny", "comodel", "comodel_tiny")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a ComModel on (original, compressed) pairs",
        description="Train a ComModel with Adam, L1 loss and a cosine learning-rate decay, on views at the attack "
                    "resolution. Either --codec SPEC with --photos DIR (pairs simulated with the real codec), or "
                    "--pairs ORIG_DIR COMP_DIR (what a platform served back, matched by file name). A third of "
                    "the photos (chosen by name) is held out for validation. Checkpoints to OUT.ckpt; --resume "
                    "continues an interrupted run exactly.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--codec", metavar="SPEC", help="codec to imitate, e.g. jpeg:50, webp:75, resize:2048+jpeg:85")
    source.add_argument("--pairs", nargs=2, metavar=("ORIG_DIR", "COMP_DIR"),
                        help="real platform pairs: originals and what the platform returned, matched by file stem")
    parser.add_argument("--photos", metavar="DIR", help="photo folder for --codec")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="trained weights (.safetensors)")
    parser.add_argument("--arch", default="comodel_tc", choices=ARCHITECTURES, help="architecture (default comodel_tc)")
    arch = parser.add_argument_group("comodel_tc architecture (defaults follow the codec; see docs/training.md)")
    arch.add_argument("--block", type=int, choices=(4, 8), default=None, help="block transform size")
    arch.add_argument("--chroma-subsampling", type=int, choices=(1, 2), default=None, help="2 for 4:2:0 codecs")
    arch.add_argument("--init-quality", type=int, default=None,
                      help="IJG quality of the initial quantisation steps (default: calibrated on the pairs)")
    arch.add_argument("--refine-width", type=int, default=None, help="refiner channels (default 32)")
    arch.add_argument("--refine-levels", type=int, default=None,
                      help="half-resolution refiner stages, a small U-Net (default 0: three full-resolution convs)")
    training = parser.add_argument_group("training")
    training.add_argument("--steps", type=positive_int, default=3000, help="optimiser steps (default 3000)")
    training.add_argument("--batch", type=positive_int, default=16, help="crops per step (default 16)")
    training.add_argument("--crop", type=positive_int, default=128, help="crop side, multiple of 16 (default 128)")
    training.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    training.add_argument("--views-per-photo", type=positive_int, default=24,
                          help="random views drawn from each training photo (default 24)")
    training.add_argument("--size", type=positive_int, default=224, help="view size in pixels (default 224)")
    training.add_argument("--validate-every", type=positive_int, default=250, help="steps between reports")
    training.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    training.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    training.add_argument("--resume", action="store_true", help="continue from OUT.ckpt if it exists")
    training.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from comcloak.errors import UserError
    from comcloak.models import comodel_io
    from comcloak.models.training import TrainConfig, new_comodel, train_comodel

    output = Path(args.output)
    checkpoint = output.with_name(output.name + ".ckpt")
    if _already_trained(args, output, checkpoint):
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = TrainConfig(steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
                             validate_every=args.validate_every)
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.size % 16:
        raise UserError(f"--size must be a multiple of 16, got {args.size}")
    if args.crop > args.size:
        raise UserError(f"--crop {args.crop} is larger than --size {args.size}")

    started = time.perf_counter()
    train_pairs, val_pairs, codec, codec_name = _pairs(args)
    for problem in [*train_pairs.problems, *val_pairs.problems]:
        print(f"skipped: {problem}", file=sys.stderr)
    data_seconds = time.perf_counter() - started

    arch, arch_config = _architecture(args, codec, train_pairs)
    try:
        model = new_comodel(arch, arch_config, args.seed)
    except ValueError as error:
        raise UserError(str(error)) from None
    if not args.quiet:
        print(f"training {arch} {arch_config} on {codec_name}: {len(train_pairs)} views from "
              f"{len(set(train_pairs.names))} photos, {len(val_pairs)} held-out photos "
              f"(pairs built in {data_seconds:.0f} s)", file=sys.stderr)

    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = train_comodel(model, train_pairs, val_pairs, config, codec=codec_name, checkpoint=checkpoint,
                               resume=args.resume, progress=None if args.quiet else _print_progress)
    except ValueError as error:
        raise UserError(str(error)) from None
    extra = {
        "comcloak.train.steps": str(result.steps),
        "comcloak.train.val_mae": f"{result.val_mae:.4f}",
        "comcloak.train.identity_mae": f"{result.identity_mae:.4f}",
        "comcloak.train.seconds": f"{result.seconds + data_seconds:.0f}",
        "comcloak.train.photos": str(len(set(train_pairs.names))),
        "comcloak.train.held_out": str(len(val_pairs)),
        "comcloak.train.seed": str(args.seed),
        "comcloak.train.threads": str(torch.get_num_threads()),
    }
    if args.photos is not None:
        extra["comcloak.train.views_per_photo"] = str(args.views_per_photo)
    comodel_io.save_comodel(result.model, output, codec=codec_name, dtype=torch.float16, extra=extra)  # atomic
    checkpoint.unlink(missing_ok=True)
    print(f"wrote {output}: val MAE {result.val_mae:.3f} on {len(val_pairs)} held-out photos "
          f"(identity {result.identity_mae:.3f}), {result.seconds + data_seconds:.0f} s")
    return 0


def _already_trained(args: argparse.Namespace, output: Path, checkpoint: Path) -> bool:
    """True when ``--resume`` finds the run finished; raises when the output exists or is misnamed."""
    from comcloak.errors import UserError

    if output.exists() and not args.overwrite and not (args.resume and checkpoint.is_file()):
        if args.resume:  # the run finished (its checkpoint is removed at the end): nothing to continue
            print(f"{output} exists and has no checkpoint to resume: already trained (--overwrite retrains)",
                  file=sys.stderr)
            return True
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    if output.suffix != ".safetensors":
        raise UserError(f"output must end in .safetensors, got {output.name!r}")
    return False


def _pairs(args: argparse.Namespace) -> tuple[PairSet, PairSet, Codec | None, str]:
    """(training pairs, held-out pairs, codec or None, codec name) from ``--codec --photos`` or ``--pairs``."""
    from comcloak.codecs import parse_codec
    from comcloak.codecs.pairs import (
        PairDataError,
        PlatformPairs,
        SimulatedPairs,
        ViewSettings,
        held_out_views,
        list_photos,
        split_held_out,
    )
    from comcloak.errors import UserError

    views = ViewSettings(size=args.size, views_per_photo=args.views_per_photo, seed=args.seed)
    try:
        if args.codec:
            if not args.photos:
                raise UserError("--codec needs --photos DIR (the photos to simulate pairs from)")
            codec = parse_codec(args.codec)
            train_photos, held_out = split_held_out(list_photos(args.photos))
            if not train_photos or not held_out:
                raise UserError(f"{args.photos}: need at least 2 photos so that one can be held out "
                                f"({len(train_photos)} training, {len(held_out)} held out)")
            train_pairs = SimulatedPairs(train_photos, codec, views).build()
            return train_pairs, held_out_views(held_out, codec, size=args.size), codec, codec.spec
        if args.photos:
            raise UserError("--photos is for --codec; with --pairs the photos are the pair folders")
        original_dir, compressed_dir = args.pairs
        matched, _ = PlatformPairs(original_dir, compressed_dir).match()
        _, held_names = split_held_out([original for original, _ in matched])
        held = {path.name for path in held_names}
        if not held or len(held) == len(matched):
            raise UserError(f"need at least 2 matched pairs so that one can be held out, found {len(matched)}")
        train_pairs = PlatformPairs(original_dir, compressed_dir, views,
                                    include=lambda path: path.name not in held).build()
        val_pairs = PlatformPairs(original_dir, compressed_dir, ViewSettings(size=args.size),
                                  include=lambda path: path.name in held).paper_views()
        return train_pairs, val_pairs, None, f"platform:{Path(compressed_dir).resolve().name}"
    except PairDataError as error:
        raise UserError(str(error)) from None


def _architecture(args: argparse.Namespace, codec: Codec | None, train_pairs: PairSet) -> tuple[str, dict]:
    """The architecture to build and its settings (comodel_tc's follow the codec and pairs, then the options)."""
    from comcloak.errors import UserError
    from comcloak.models.training import default_comodel_config

    overrides = {"block": args.block, "chroma_subsampling": args.chroma_subsampling,
                 "init_quality": args.init_quality, "refine_width": args.refine_width,
                 "refine_levels": args.refine_levels}
    if args.arch.startswith("comodel_tc"):
        arch_config = default_comodel_config(codec, train_pairs, tiny=args.arch == "comodel_tc_tiny")
        arch_config.update({key: value for key, value in overrides.items() if value is not None})
        return "comodel_tc", arch_config
    if any(value is not None for value in overrides.values()):
        raise UserError(f"--block/--chroma-subsampling/--init-quality/--refine-* apply to comodel_tc, "
                        f"not {args.arch}")
    return "comodel", {"width": 0.125 if args.arch == "comodel_tiny" else 1.0}


def _print_progress(entry: TrainProgress) -> None:
    """One progress line per validation, on stderr."""
    print(f"step {entry.step}/{entry.steps}  loss {entry.loss:.3f}  val MAE {entry.val_mae:.3f} "
          f"(identity {entry.identity_mae:.3f})  lr {entry.lr:.2e}  {entry.seconds:.0f} s",
          file=sys.stderr, flush=True)
