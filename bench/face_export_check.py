"""The face step's export self-check on the real SFace: export the face step of a face preset (its stand-in, draws
and loss) at its working-view size and record what the calibrated check measured (ONNX Runtime's and torch
float32's gradient errors against float64 autograd, per image, the tolerances applied), the graph's operators and
how long the export took.

Usage: python bench/face_export_check.py [--preset faces] [--json bench/results/face-export-check-224.json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from comcloak.attacks.faces import face_config
from comcloak.attacks.through import make_through
from comcloak.engine.bench_results import library_versions, machine_description, write_results
from comcloak.export.face_export import export_face_step
from comcloak.export.step_io import StepSpec
from comcloak.models.faces import create_face_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="faces")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    config = face_config(args.preset)
    size = config.face.work_size
    with tempfile.TemporaryDirectory() as scratch:
        report = export_face_step(create_face_model(config.face.recogniser), make_through(config.attack.through),
                                  size, Path(scratch) / "face-step.onnx", StepSpec.from_config(config.attack))
    check = report.check
    row = {"recogniser": config.face.recogniser, "through": config.attack.through, "size": size,
           "draws": config.attack.eot.draws, "seconds": round(report.seconds, 1), "passed": check.passed,
           "onnxruntime_errors": [float(f"{value:.3g}") for value in check.errors],
           "torch_float32_errors": [float(f"{value:.3g}") for value in check.torch_errors],
           "median": check.gradient_error, "torch_median": check.torch_gradient_error,
           "tolerance": check.gradient_tolerance, "worst": max(check.errors), "worst_tolerance": check.worst_tolerance,
           "outputs": check.logits_error, "outputs_tolerance": check.logits_tolerance, "ops": report.ops}
    payload = {"machine": machine_description(), "versions": library_versions(), "preset": args.preset,
               "results": [row]}
    versions = ", ".join(f"{name} {value}" for name, value in payload["versions"].items())
    table = (f"Machine: {payload['machine']}  \nVersions: {versions}  \n"
             f"Preset {args.preset}: {row['recogniser']} through {row['through']}, {row['draws']} draws, "
             f"{size}x{size}; export and check {row['seconds']} s\n\n"
             "| gradient error, median image (ONNX Runtime / torch fp32) | allowed | worst image (ONNX Runtime / "
             "torch) | allowed | cosines and loss | allowed | passed |\n|---|---:|---|---:|---:|---:|---|\n"
             f"| {row['median']:.2e} / {row['torch_median']:.2e} | {row['tolerance']:.2e} | {row['worst']:.2e} / "
             f"{max(check.torch_errors):.2e} | {row['worst_tolerance']:.2e} | {row['outputs']:.2e} | "
             f"{row['outputs_tolerance']:.2e} | {row['passed']} |\n")
    print(table)
    if args.json:
        write_results(payload, args.json, table)


if __name__ == "__main__":
    main()
