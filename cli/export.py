"""``comcloak export --format onnx -o FILE``: the attack-step graph for ONNX Runtime / TensorRT (docs/DESIGN.md §4)."""

from __future__ import annotations

import argparse

from comcloak import defaults
from comcloak.attacks.presets import STRENGTHS
from comcloak.cli.options import add_classifier_options, add_through_option, positive_int

DEFAULT_VIEW = 224  # the attack view of a plain step (no --strength): the paper's square


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export the attack step as an ONNX graph (or a TensorRT engine)",
        description="Export one attack step (x, x0, m, w, eps, alpha, mu) -> (x_next, m_next, logits, loss) of "
                    "classifier(stand-in(x)) as ordinary forward ops, with a dynamic batch. The export checks "
                    "itself (onnx checker, TensorRT op whitelist, ONNX Runtime against torch autograd) and is "
                    "written only if the checks pass.")
    parser.add_argument("--format", default="onnx", choices=("onnx", "tensorrt"),
                        help="onnx (default), or tensorrt: also build a serialised engine (needs TensorRT and a GPU)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the .onnx (or .engine) file to write")
    parser.add_argument("--strength", default=None, choices=STRENGTHS,
                        help="export the step a preset runs (its surrogates, stand-ins, draws, loss and step rule: "
                             "what comcloak cloak --strength NAME --backend onnxruntime exports), square at its "
                             "working view unless --height/--width are given; not with --classifier or --through")
    add_through_option(add_classifier_options(parser), None,
                       f"{defaults.THROUGH}; exportable: none, comodel:CODEC, comodel:PATH")
    parser.add_argument("--height", type=positive_int, default=None,
                        help=f"attack-view height (default {DEFAULT_VIEW}, or the --strength preset's working view)")
    parser.add_argument("--width", type=positive_int, default=None,
                        help=f"attack-view width (default {DEFAULT_VIEW}, or the --strength preset's working view)")
    parser.add_argument("--max-batch", type=positive_int, default=64,
                        help="tensorrt: the engine profile's largest batch (default 64)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.set_defaults(run=run, classifier=None)  # None: not given (the default, or refused beside --strength)


def step_to_export(args: argparse.Namespace) -> tuple:
    """The (classifier or ensemble, stand-in, StepSpec, height, width, metadata) ``args`` ask to export: a plain
    step of ``--classifier`` through ``--through``, or the ``--strength`` preset's step."""
    from torch import nn

    from comcloak.attacks import make_through
    from comcloak.attacks.presets import preset_config
    from comcloak.engine.cloaker import load_classifier
    from comcloak.errors import UserError
    from comcloak.export.step_io import StepSpec
    from comcloak.models import freeze

    if args.strength is None:
        classifier_name, through_spec = args.classifier or defaults.CLASSIFIER, args.through or defaults.THROUGH
        spec, size, seed = StepSpec(), DEFAULT_VIEW, 0
        metadata = {"classifier": classifier_name, "through": through_spec}
        classifier = freeze(load_classifier(classifier_name, args.classifier_weights))
    else:
        if args.classifier is not None or args.classifier_weights is not None or args.through is not None:
            raise UserError(f"--strength {args.strength} exports the preset's own surrogates and stand-ins; "
                            "--classifier, --classifier-weights and --through do not apply")
        config = preset_config(args.strength)
        through_spec, spec, size, seed = config.through, StepSpec.from_config(config), config.attack_size, config.seed
        metadata = {"classifier": config.classifier, "through": through_spec, "strength": args.strength}
        members = [freeze(load_classifier(name)) for name in config.classifiers]
        classifier = members[0] if len(members) == 1 else nn.ModuleList(members)
    stand_in, _, argument = through_spec.partition(":")
    if stand_in in ("comodel", "comodel-cubic"):
        metadata["codec"] = argument
    through = freeze(make_through(through_spec, seed))  # as the Cloaker builds it
    return classifier, through, spec, args.height or size, args.width or size, metadata


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from comcloak.errors import UserError
    from comcloak.export.onnx_export import OnnxFromTorch

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    classifier, through, spec, height, width, metadata = step_to_export(args)
    if args.format == "onnx":
        loader = OnnxFromTorch(classifier, through, height, width, output, metadata, spec=spec)
        loader()
        report = loader.report
    else:
        from comcloak.atomic import atomic_writer
        from comcloak.engine.backends import EngineFromOnnx
        from comcloak.export.onnx_export import import_optional

        trt = import_optional("tensorrt", extra="trt")
        with tempfile.TemporaryDirectory() as scratch:
            loader = OnnxFromTorch(classifier, through, height, width, Path(scratch) / "step.onnx", metadata,
                                   spec=spec)
            loader()
            report = loader.report
            serialized = EngineFromOnnx(loader.path, args.max_batch).build(trt, trt.Logger(trt.Logger.WARNING))
            with atomic_writer(output) as handle:
                handle.write(bytes(serialized))
    assert report is not None
    nodes = sum(report.ops.values())
    print(f"wrote {output}: {nodes} nodes, {len(report.ops)} operator types, {report.seconds:.1f} s")
    check = report.check
    print(f"checks: onnx checker ok, TensorRT op whitelist ok, ONNX Runtime vs float64 torch autograd on "
          f"{len(check.errors)} images: gradient relative error {check.gradient_error:.2e} median image, "
          f"{max(check.errors):.2e} worst (torch float32: {check.torch_gradient_error:.2e}, "
          f"{max(check.torch_errors):.2e}; allowed {check.gradient_tolerance:.2e}, {check.worst_tolerance:.2e}), "
          f"logits {check.logits_error:.2e} (allowed {check.logits_tolerance:.2e})")
    return 0
