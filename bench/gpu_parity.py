"""Parity of the CUDA-graph backend (fp32 and bf16) with the eager fp32 reference on the paper protocol (GPU).

For each attack configuration, on the paper views (224x224) of the photos: the success-rate difference after the
real codec (the criterion: at most 2 points on 100 photos) and the fraction of uint8 pixels within 1/255 of the
eager fp32 cloak. The photos are a folder (their paper views are made here) or a ``.npy`` of uint8 (N, 224, 224, 3)
views; ``--mirror`` adds each view's mirror image (61 dev photos -> 122 views).

Usage: python bench/gpu_parity.py PHOTOS [--mirror] [--json bench/results/parity-gpu.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from parity import success_after, within, write_results  # bench/parity.py, beside this script

from comcloak import defaults
from comcloak.attacks import attack_config, make_through, run_attack
from comcloak.codecs import parse_codec
from comcloak.codecs.pairs import list_photos, load_rgb, paper_view
from comcloak.codecs.tensors import to_tensor
from comcloak.engine.backends import CudaGraphTorchRunner
from comcloak.engine.cloaker import load_classifier
from comcloak.engine.throughput import library_versions, machine_description
from comcloak.models import freeze

CONFIGS = [("mim", True), ("mim", False), ("bim", True), ("fgsm", False)]


def load_views(source: str, mirror: bool) -> np.ndarray:
    path = Path(source)
    views = np.load(path) if path.suffix == ".npy" else np.stack([paper_view(load_rgb(p)) for p in list_photos(path)])
    return np.concatenate([views, views[:, :, ::-1]]) if mirror else views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", help="photo folder, or .npy of uint8 (N, 224, 224, 3) paper views")
    parser.add_argument("--mirror", action="store_true", help="add the mirror image of every view")
    parser.add_argument("--classifier", default=defaults.CLASSIFIER)
    parser.add_argument("--through", default=defaults.THROUGH)
    parser.add_argument("--codec", default=defaults.PAPER_CODEC)
    parser.add_argument("--eps", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", default="bench/results/parity-gpu.json")
    args = parser.parse_args()

    began = time.perf_counter()
    device = torch.device("cuda")
    classifier = freeze(load_classifier(args.classifier).to(device))
    through = freeze(make_through(args.through).to(device))
    codec = parse_codec(args.codec)
    x0 = to_tensor(load_views(args.photos, args.mirror), device)
    with torch.no_grad():
        clean = torch.cat([classifier(x0[i : i + args.batch]).argmax(1) for i in range(0, len(x0), args.batch)])
    rows = []
    for method, targeted in CONFIGS:
        config = attack_config(method, args.eps / 255, targeted=targeted)
        goal = (clean + 500) % 1000 if targeted else clean
        reference = torch.cat([run_attack(classifier, x0[i : i + args.batch], goal[i : i + args.batch], config,
                                          through) for i in range(0, len(x0), args.batch)])
        row = {"attack": method, "targeted": targeted,
               "success_eager_fp32": success_after(classifier, codec, reference, goal, targeted)}
        for precision in ("fp32", "bf16"):
            with CudaGraphTorchRunner(classifier, through, config, device, precision, max_batch=args.batch) as r:
                cloaked = r.infer(x0, goal)
            row[f"success_cudagraph_{precision}"] = success_after(classifier, codec, cloaked, goal, targeted)
            row[f"pixels_within_1_{precision}"] = within(cloaked, reference)
        rows.append(row)
        print(json.dumps(row), flush=True)
    payload = {"machine": machine_description("cuda"), "versions": library_versions(), "classifier": args.classifier,
               "through": args.through, "codec": args.codec, "eps": args.eps, "n_views": len(x0), "results": rows,
               "seconds": time.perf_counter() - began}
    lines = [f"CUDA-graph parity on {len(x0)} paper views, {args.classifier} through {args.through}, eps "
             f"{args.eps:g}, success after {args.codec}", "",
             "| attack | targeted | eager fp32 | cudagraph fp32 | cudagraph bf16 | pixels within 1/255: fp32 / bf16 |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['attack']} | {row['targeted']} | {100 * row['success_eager_fp32']:.1f}% | "
                     f"{100 * row['success_cudagraph_fp32']:.1f}% | {100 * row['success_cudagraph_bf16']:.1f}% | "
                     f"{100 * row['pixels_within_1_fp32']:.2f}% / {100 * row['pixels_within_1_bf16']:.2f}% |")
    write_results(args.json, payload, lines)


if __name__ == "__main__":
    main()
