"""The export self-check on the real networks: for every shipped ComModel and both pretrained classifiers, export the
attack step at one view size and record what the calibrated check measured (ONNX Runtime's and torch float32's
gradient errors against float64 autograd, per image, and the tolerances applied).

Usage: python bench/export_check.py [--size 224] [--json bench/results/export-check-224.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from comcloak.attacks import make_through
from comcloak.engine.bench_results import write_results
from comcloak.engine.cloaker import load_classifier
from comcloak.engine.throughput import library_versions, machine_description
from comcloak.export.onnx_export import ExportError, export_attack_step
from comcloak.models import freeze
from comcloak.models.comodel_io import list_shipped_comodels

CLASSIFIERS = ("efficientnet_lite0", "mobilenet_v2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in CLASSIFIERS:
            classifier = freeze(load_classifier(name))
            for codec in sorted(list_shipped_comodels()):
                began = time.perf_counter()
                row = {"classifier": name, "through": f"comodel:{codec}"}
                try:
                    report = export_attack_step(classifier, freeze(make_through(row["through"])), args.size,
                                                args.size, Path(scratch) / "step.onnx")
                except ExportError as error:
                    row.update(passed=False, error=str(error))
                else:
                    check = report.check
                    row.update(passed=True, median=check.gradient_error, worst=max(check.errors),
                               torch_median=check.torch_gradient_error, torch_worst=max(check.torch_errors),
                               allowed_median=check.gradient_tolerance, allowed_worst=check.worst_tolerance,
                               logits=check.logits_error)
                row["seconds"] = round(time.perf_counter() - began, 1)
                print(json.dumps(row), flush=True)
                rows.append(row)
    lines = [f"Machine: {machine_description()}  ", f"Size: {args.size}x{args.size}, {len(rows)} exports  ", "",
             "| classifier | stand-in | passed | ORT median | ORT worst | torch f32 median | torch f32 worst | "
             "allowed median | allowed worst |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row["passed"]:
            lines.append(f"| {row['classifier']} | {row['through']} | yes | {row['median']:.2e} | {row['worst']:.2e} | "
                         f"{row['torch_median']:.2e} | {row['torch_worst']:.2e} | {row['allowed_median']:.2e} | "
                         f"{row['allowed_worst']:.2e} |")
        else:
            lines.append(f"| {row['classifier']} | {row['through']} | **no** | {row['error'][:80]} |||||| ")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.json:
        write_results({"machine": machine_description(), "versions": library_versions(), "size": args.size,
                       "results": rows}, args.json, table)


if __name__ == "__main__":
    main()
