"""``comcloak eval-commodel``: how closely a ComModel imitates a real codec (MAE on the 0..255 scale, 224x224).

Each photo is resized to 224x224 (the paper protocol's view), compressed by the real codec, and compared with the
ComModel's rounded, clipped output. Beside it: the identity baseline (the uncompressed view against the compressed
one) and, for plain JPEG, the differentiable JPEG at the same quality (Shin & Song).
"""

from __future__ import annotations

import argparse
import sys

from comcloak.cli.options import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-commodel", help="MAE of a ComModel against the real codec",
        description="MAE (0-255 scale) of a ComModel against the real codec on 224x224 views of the photos, beside "
                    "the identity baseline and, for JPEG, diff-JPEG. Without --weights the shipped ComModel for "
                    "--codec is used.")
    parser.add_argument("--codec", required=True, metavar="SPEC", help="real codec, e.g. jpeg:50")
    parser.add_argument("--photos", required=True, metavar="DIR", help="photo folder")
    parser.add_argument("--weights", metavar="FILE", help="ComModel weights (default: the shipped one for --codec)")
    parser.add_argument("--held-out", action="store_true",
                        help="only the photos that 'comcloak train' holds out (a third, chosen by name)")
    parser.add_argument("--size", type=positive_int, default=224, help="view size (default 224)")
    parser.add_argument("--json", metavar="OUT", help="write the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from comcloak.atomic import write_json
    from comcloak.attacks.through import load_comodel, resolve_comodel
    from comcloak.codecs import parse_codec
    from comcloak.codecs.diffjpeg import DiffJPEG
    from comcloak.codecs.pairs import PairDataError, held_out_views, list_photos, split_held_out
    from comcloak.codecs.real import Jpeg
    from comcloak.errors import UserError
    from comcloak.models.training import comodel_mae, identity_mae

    if args.size % 16:
        raise UserError(f"--size must be a multiple of 16, got {args.size}")
    codec = parse_codec(args.codec)
    weights = resolve_comodel(args.weights or codec.spec)
    model = load_comodel(weights)
    try:
        photos = list_photos(args.photos)
        if args.held_out:
            photos = split_held_out(photos)[1]
        if not photos:
            raise UserError(f"no photos in {args.photos}")
        pairs = held_out_views(photos, codec, size=args.size)
    except PairDataError as error:
        raise UserError(str(error)) from None
    for problem in pairs.problems:
        print(f"skipped: {problem}", file=sys.stderr)

    with torch.inference_mode():
        mae = comodel_mae(model, pairs.originals, pairs.compressed)
        diffjpeg_mae = None
        if isinstance(codec, Jpeg):
            diffjpeg = DiffJPEG(codec.quality, codec.subsampling)
            diffjpeg_mae = comodel_mae(diffjpeg, pairs.originals, pairs.compressed)
    result = {
        "codec": codec.spec,
        "n_photos": len(pairs),
        "mae": float(mae),
        "identity_mae": identity_mae(pairs),
        "diffjpeg_mae": None if diffjpeg_mae is None else float(diffjpeg_mae),
    }
    line = f"{codec.spec}: ComModel MAE {result['mae']:.3f}  identity {result['identity_mae']:.3f}"
    if diffjpeg_mae is not None:
        line += f"  diff-JPEG {diffjpeg_mae:.3f}"
    print(f"{line}  ({len(pairs)} photos, {weights})")
    if args.json:
        write_json(result, args.json)
    return 0
