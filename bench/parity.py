"""Parity of the onnxruntime backend with the torch reference on real photos (EfficientNet-Lite0 through a ComModel).

Three measures per attack configuration, on the paper view (224x224) of each photo:

* end to end: the fraction of uint8 pixels within 1/255 between the onnxruntime cloak and the torch cloak;
* the float noise floor: the same fraction between torch in float32 and torch in float64 — two implementations
  that differ only by rounding, so any two float32 backends can be expected to agree about this much;
* step by step (teacher-forced): every step of the reference is fed to the exported step graph, and its x_next is
  compared with the reference's next iterate — whether the two compute the same step function;
* the outcome: success rates of both backends' cloaks after real JPEG 50 (paper protocol).

Usage: python bench/parity.py PHOTOS [--limit N] [--through comodel:jpeg:50] [--json bench/results/parity-cpu.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from comcloak import defaults
from comcloak.atomic import atomic_writer, write_json
from comcloak.attacks import attack_config, attack_succeeded, make_through, run_attack
from comcloak.attacks.loop import attack_update, descent_gradient
from comcloak.codecs import parse_codec
from comcloak.codecs.pairs import list_photos, load_rgb, paper_view
from comcloak.codecs.tensors import to_tensor, to_uint8
from comcloak.engine.backends import OnnxRuntimeRunner, StepGraphCache
from comcloak.engine.cloaker import load_classifier
from comcloak.engine.throughput import library_versions, machine_description
from comcloak.export.gradient import goal_weights
from comcloak.export.onnx_export import INPUT_NAMES
from comcloak.models import freeze

CONFIGS = [(method, targeted) for method in ("fgsm", "bim", "mim") for targeted in (False, True)]


def within(a: torch.Tensor, b: torch.Tensor) -> float:
    qa, qb = (a * 255).round(), (b * 255).round()
    return float(((qa - qb).abs() <= 1).float().mean())


def success_after(classifier, codec, cloaked: torch.Tensor, goal: torch.Tensor, targeted: bool) -> float:
    """Paper protocol: round to uint8, compress with the real codec, classify; success = target / not clean.

    The classifier and ``goal`` share a device (CPU or GPU); the codec runs on the host."""
    compressed = np.stack([codec.apply(image) for image in to_uint8(cloaked.cpu())])
    with torch.no_grad():
        labels = classifier(to_tensor(compressed, goal.device)).argmax(1)
    # untargeted, the goal is the clean label
    return float(attack_succeeded(labels, goal, goal, targeted).float().mean())


def write_results(path: str | Path, payload: dict, table_lines: list[str]) -> None:
    """The JSON document and, beside it, the markdown table (also printed)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(payload, out)
    with atomic_writer(out.with_suffix(".md")) as handle:
        handle.write(("\n".join(table_lines) + "\n").encode())
    print("\n".join(table_lines))


def teacher_forced(session, classifier, through, x0, goal, config) -> float:
    """Mean over steps of the fraction of pixels where the exported step's x_next equals the reference's."""
    lower, upper = (x0 - config.eps).clamp_min(0), (x0 + config.eps).clamp_max(1)
    direction = -1.0 if config.targeted else 1.0
    w = goal_weights(goal[:, None], 1000, config.targeted).numpy()  # (N, 1 surrogate, K)
    x, momentum, agree = x0.clone(), torch.zeros_like(x0), []
    scalars = [np.array([v], np.float32) for v in (config.eps, config.alpha, config.momentum)]
    for _ in range(config.steps):
        # The graph always descends -sum(w log p); untargeted, that is the reference's momentum negated.
        feed = dict(zip(INPUT_NAMES, [x.numpy(), x0.numpy(), (-direction * momentum).numpy(), w, *scalars,
                                      np.ones_like(x0[:, :1].numpy())]))  # the uniform budget
        x_graph = torch.from_numpy(session.run(["x_next"], feed)[0])
        # The loop's own gradient of the descended loss; attack_update takes the cross-entropy's (sign flipped
        # untargeted, where the descended loss is minus the cross-entropy).
        _, descent = descent_gradient([classifier], through, x, goal[:, None], config)
        gradient = -direction * descent
        x, momentum = attack_update(x, momentum, gradient, config, lower, upper)
        agree.append(within(x_graph, x))
    return float(np.mean(agree))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--classifier", default=defaults.CLASSIFIER)
    parser.add_argument("--through", default=defaults.THROUGH)
    parser.add_argument("--eps", type=float, default=5.0)
    parser.add_argument("--codec", default=defaults.PAPER_CODEC,
                        help=f"real codec for the success rates (default {defaults.PAPER_CODEC})")
    parser.add_argument("--json", default="bench/results/parity-cpu.json")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()

    began = time.perf_counter()
    classifier = freeze(load_classifier(args.classifier))
    through = freeze(make_through(args.through))
    photos = [paper_view(load_rgb(path)) for path in list_photos(args.photos)[: args.limit]]
    x0 = to_tensor(np.stack(photos))
    codec = parse_codec(args.codec)
    with torch.no_grad():
        clean = classifier(x0).argmax(1)
    graph = StepGraphCache(classifier, through, args.cache_dir).path_for(224, 224)
    classifier64, through64 = copy.deepcopy(classifier).double(), copy.deepcopy(through).double()
    rows = []
    for method, targeted in CONFIGS:
        config = attack_config(method, args.eps / 255, targeted=targeted)
        goal = (clean + 500) % 1000 if targeted else clean
        reference = run_attack(classifier, x0, goal, config, through)
        reference64 = run_attack(classifier64, x0.double(), goal, config, through64).float()
        with OnnxRuntimeRunner(graph, config) as runner:
            cloaked = runner.infer(x0, goal)
            step_agree = teacher_forced(runner.session, classifier, through, x0, goal, config)
        row = {"attack": method, "targeted": targeted, "end_to_end": within(cloaked, reference),
               "float32_vs_float64": within(reference, reference64), "per_step": step_agree,
               "success_torch": success_after(classifier, codec, reference, goal, targeted),
               "success_onnxruntime": success_after(classifier, codec, cloaked, goal, targeted)}
        rows.append(row)
        print(json.dumps(row))
    payload = {"machine": machine_description(), "versions": library_versions(), "classifier": args.classifier,
               "through": args.through, "codec": args.codec, "eps": args.eps, "n_photos": len(photos), "results": rows,
               "seconds": time.perf_counter() - began}
    lines = [f"Parity on {len(photos)} photos, {args.classifier} through {args.through}, eps {args.eps:g}: fraction "
             "of uint8 pixels within 1/255", "", "| attack | targeted | onnxruntime vs torch (end to end) | "
             f"torch fp32 vs fp64 (end to end) | onnxruntime vs torch (per step) | success after {args.codec}: "
             "torch / onnxruntime |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['attack']} | {row['targeted']} | {100 * row['end_to_end']:.2f}% | "
                     f"{100 * row['float32_vs_float64']:.2f}% | {100 * row['per_step']:.3f}% | "
                     f"{100 * row['success_torch']:.0f}% / {100 * row['success_onnxruntime']:.0f}% |")
    write_results(args.json, payload, lines)


if __name__ == "__main__":
    main()
