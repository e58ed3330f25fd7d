"""``comcloak demo``: cloak the bundled sample photos with the shipped defaults and write a sheet."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from comcloak.cli.cloak import add_output_options, cloak_and_report
from comcloak.cli.options import (
    add_attack_options,
    add_classifier_options,
    add_protection_options,
    add_runtime_options,
    build_cloaker,
)
from comcloak.samples import sample_photos

if TYPE_CHECKING:
    from comcloak.evaluation.sheet import BudgetMap

DEFAULT_OUTPUT = "comcloak-demo"
BUDGET_PHOTO = "rocket.jpg"  # the sheet shows its budget map (flat night sky beside the towers' texture)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="cloak the bundled sample photos and write a comparison sheet",
        description="Cloak the bundled sample photos with the default settings; writes the cloaked photos and "
                    "sheet.png (original | cloaked | amplified difference; for one photo also the per-pixel L-inf "
                    "budget, --budget) under ./comcloak-demo/.")
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
    budget = sheet_budget(cloaker, rows)
    sheet = write_sheet(rows, cloaker.config.eps_255, output_dir / "sheet.png", budget)
    if not args.quiet:
        shown = "" if budget is None else f"; the L-inf budget map of {budget.caption}"
        print(f"wrote {len(rows)} cloaked photos and {sheet} (original | cloaked | amplified difference{shown})")
    return status


def sheet_budget(cloaker, rows: list) -> BudgetMap | None:
    """The budget map the sheet shows: that of :data:`BUDGET_PHOTO` (else the first photo) as the objects cloak
    bounded it at full resolution, or None when no classifier cloak ran (``--protect faces``)."""
    from comcloak.attacks.budget import full_resolution_budget
    from comcloak.attacks.config import UNIFORM_BUDGET
    from comcloak.codecs.tensors import to_tensor
    from comcloak.evaluation.sheet import BudgetMap

    if not rows or not cloaker.protection.objects:
        return None
    caption, original, _ = next((row for row in rows if row[0] == BUDGET_PHOTO), rows[0])
    config = cloaker.config
    # One scale for every budget (up to the texture budget's ceiling): the uniform map is its middle colour, eps.
    if config.budget == UNIFORM_BUDGET:
        return BudgetMap(caption, None, config.budget_ceiling, config.budget)
    factors = full_resolution_budget(to_tensor(original[None]), config)  # the map the cloak was composed with
    return BudgetMap(caption, factors[0, 0].numpy(), config.budget_ceiling, config.budget)
