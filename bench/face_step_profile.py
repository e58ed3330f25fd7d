"""Where one face step's time goes on ONNX Runtime's CPU provider: the exported graph of a face preset (from the
step-graph cache, exported there if missing; or any face step graphs, ``--graph``, repeatable) profiled over a few
steps, beside the host's per-step work (the loop's draws and the alignment taps, the code the torch loop runs too).

Each node's kernel time is the median over the steps, so another job's burst on this shared CPU moves one step, not
the figure: their sum (``sum of per-node medians``) is what to compare between graphs, with the per-operator split.

Usage: python bench/face_step_profile.py [--preset faces] [--steps 8] [--cache-dir DIR] [--graph FILE ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time

import torch

from comcloak.attacks.eot import DrawSampler
from comcloak.attacks.faces import face_config
from comcloak.attacks.faces.cloak import FaceModels
from comcloak.attacks.through import make_through
from comcloak.engine.backends.face_runner import FaceOnnxRuntimeRunner, FaceStepGraphCache
from comcloak.export.face_export import check_view, face_example_inputs, face_step_module
from comcloak.export.face_step import warp_inputs
from comcloak.export.step_io import StepSpec


def profile(graph: str, feed: dict, steps: int) -> tuple[float, dict[str, float]]:
    """(wall seconds per step, {operator: summed per-node median kernel microseconds}) of ``graph`` on ``feed``."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.enable_profiling, options.profile_file_prefix = True, f"{scratch}/profile"
        options.log_severity_level = 3
        for key, value in FaceOnnxRuntimeRunner.session_config.items():  # as the runner runs it
            options.add_session_config_entry(key, value)
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        session.run(None, feed)
        began = time.perf_counter()
        for _ in range(steps):
            session.run(None, feed)
        per_step = (time.perf_counter() - began) / steps
        with open(session.end_profiling()) as handle:
            events = json.load(handle)
    per_node: dict[str, list[float]] = collections.defaultdict(list)
    op_of = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[event["name"]].append(event["dur"])
            op_of[event["name"]] = event["args"]["op_name"]
    kernels: collections.Counter[str] = collections.Counter()
    for node, durations in per_node.items():
        kernels[op_of[node]] += statistics.median(durations[1:] or durations)  # the first run: warm-up
    return per_step, kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="faces")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--graph", action="append", help="a face step graph (default: the preset's, from the cache)")
    args = parser.parse_args()

    config = face_config(args.preset)
    size, models = config.face.work_size, FaceModels.create(config.face.detector, config.face.recogniser)
    through, spec = make_through(config.attack.through), StepSpec.from_config(config.attack)
    graphs = args.graph or [str(FaceStepGraphCache(models.recogniser, through, spec, args.cache_dir).path_for(size))]
    _, layout = face_step_module(models.recogniser, through, size, spec)
    inputs = face_example_inputs(1, size, torch.Generator().manual_seed(0), layout, config.attack.eot,
                                 models.recogniser)
    feed = {name: value.numpy() for name, value in zip(layout.input_names, inputs)}
    sampler = DrawSampler.for_images(config.attack.eot, layout.stand_ins, inputs[1], config.attack.seed)
    view = check_view(models.recogniser, size, 0)
    began = time.perf_counter()
    for _ in range(args.steps):
        sampler.sample(1, size, size)
    draws = (time.perf_counter() - began) / args.steps
    began = time.perf_counter()
    for _ in range(args.steps):
        warp_inputs(view, layout.draws, size)
    taps = (time.perf_counter() - began) / args.steps
    print(f"host per step: draws {draws:.3f} s, taps {taps:.3f} s")
    for graph in graphs:
        per_step, kernels = profile(graph, feed, args.steps)
        total = sum(kernels.values())
        print(f"graph {graph}: {per_step:.3f} s per step (ONNX Runtime, profiled); sum of per-node medians "
              f"{total / 1000:.1f} ms")
        for op, duration in kernels.most_common(12):
            print(f"  {op:20s} {duration / 1000:6.2f} ms  {100 * duration / total:5.1f} % of kernel time")


if __name__ == "__main__":
    main()
