"""``comcloak demo``: cloak the bundled sample photos with the shipped defaults and write a sheet."""

from __future__ import annotations

import argparse
from pathlib import Path

from comcloak.cli.cloak import add_output_options, cloak_and_report
from comcloak.cli.options import (
    add_attack_options,
    add_classifier_options,
    add_protection_options,
    add_runtime_options,
    build_cloaker,
)
from comcloak.samples import sample_photos

DEFAULT_OUTPUT = "comcloak-demo"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="cloak the bundled sample photos and write a comparison sheet",
        description="Cloak the bundled sample photos with the default settings; writes the cloaked photos and "
                    "sheet.png (original | cloaked | amplified difference) under ./comcloak-demo/.")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT, metavar="OUTDIR",
                        help=f"output folder (default ./{DEFAULT_OUTPUT})")
    add_output_options(parser, overwrite_option=False)  # the demo folder is ours: a rerun refreshes it
    add_protection_options(parser)
    add_attack_options(parser)
    add_classifier_options(parser, ensemble=True)
    add_runtime_options(parser)
    parser.set_defaults(run=run, overwrite=True)


def run(args: argparse.Namespace) -> int:
    from comcloak.codecs import parse_codec
    from comcloak.codecs.photos import load_photo
    from comcloak.engine.archive import check_report_path, check_writable
    from comcloak.engine.outputs import plan_outputs
    from comcloak.evaluation.sheet import write_sheet

    check_codec = parse_codec(args.check)
    output_dir = Path(args.output)
    check_writable(output_dir, folder=True)
    plan = plan_outputs([(path, Path(path.name)) for path in sample_photos()], output_dir, [], args.format)
    if args.report:
        check_writable(Path(args.report))
        check_report_path(Path(args.report), [], plan, output_dir)
    cloaker = build_cloaker(args)
    cloaker.load_face_models()  # a missing face-model package: one line, exit 2, before any photo
    status = cloak_and_report(cloaker, plan, [], output_dir, check_codec, args)
    rows = []
    for planned in plan:
        if planned.destination is not None and planned.destination.exists():
            rows.append((planned.source.name, load_photo(planned.source).pixels,
                         load_photo(planned.destination).pixels))
    sheet = write_sheet(rows, cloaker.config.eps_255, output_dir / "sheet.png")
    if not args.quiet:
        print(f"wrote {len(rows)} cloaked photos and {sheet} (original | cloaked | amplified difference)")
    return status
