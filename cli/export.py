"""``comcloak export --format onnx -o FILE``: the attack-step graph for ONNX Runtime / TensorRT (docs/DESIGN.md §4)."""

from __future__ import annotations

import argparse

from comcloak import defaults
from comcloak.cli.options import add_classifier_options, add_through_option, positive_int


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
    add_through_option(add_classifier_options(parser), defaults.THROUGH,
                       f"{defaults.THROUGH}; exportable: none, comodel:CODEC, comodel:PATH")
    parser.add_argument("--height", type=positive_int, default=224, help="attack-view height (default 224)")
    parser.add_argument("--width", type=positive_int, default=224, help="attack-view width (default 224)")
    parser.add_argument("--max-batch", type=positive_int, default=64,
                        help="tensorrt: the engine profile's largest batch (default 64)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from comcloak.attacks import make_through
    from comcloak.engine.cloaker import load_classifier
    from comcloak.errors import UserError
    from comcloak.export.onnx_export import OnnxFromTorch
    from comcloak.models import freeze

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    classifier = freeze(load_classifier(args.classifier, args.classifier_weights))
    through = freeze(make_through(args.through))
    metadata = {"classifier": args.classifier, "through": args.through}
    stand_in, _, argument = args.through.partition(":")
    if stand_in in ("comodel", "comodel-cubic"):
        metadata["codec"] = argument
    if args.format == "onnx":
        loader = OnnxFromTorch(classifier, through, args.height, args.width, output, metadata)
        loader()
        report = loader.report
    else:
        from comcloak.atomic import atomic_writer
        from comcloak.engine.backends import EngineFromOnnx
        from comcloak.export.onnx_export import import_optional

        trt = import_optional("tensorrt", extra="trt")
        with tempfile.TemporaryDirectory() as scratch:
            loader = OnnxFromTorch(classifier, through, args.height, args.width, Path(scratch) / "step.onnx",
                                   metadata)
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
