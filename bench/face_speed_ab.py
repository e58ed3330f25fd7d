"""The face loop's time per face, interleaved in one process on the same dev faces: the torch loop and two face step
graphs on ONNX Runtime (``--before`` and ``--after``, each with its host-thread count), so a round's ratios compare
like with like on a shared CPU. Used for docs/faces.md, "Speed" (graph format 3 with the host on torch's default
threads against format 4 with the host on one).

Usage: python bench/face_speed_ab.py --before OLD.onnx [--after NEW.onnx] [--before-host-threads 2]
       [--after-host-threads 1] [--rounds 3] [--faces 2] [--photos DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import comcloak.engine.backends.face_runner as face_runner
from comcloak.attacks.faces.cloak import FaceModels, attack_face, face_loop
from comcloak.attacks.through import make_through
from comcloak.cli.bench import face_photos
from comcloak.codecs.tensors import to_tensor
from comcloak.engine.face_throughput import FaceBenchSettings, load_faces
from comcloak.export.step_io import StepSpec


def graph_loop(models: FaceModels, config, graph: str) -> face_runner.FaceOnnxRuntimeLoop:
    """An ONNX Runtime face loop on ``graph`` (not the cache's)."""
    loop = face_runner.FaceOnnxRuntimeLoop(models.recogniser, config)
    loop._runner = face_runner.FaceOnnxRuntimeRunner(graph, config.attack)
    loop._runner.activate()
    return loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a face step graph (e.g. a format-3 one)")
    parser.add_argument("--after", default=None, help="a face step graph (default: the preset's, from the cache)")
    parser.add_argument("--before-host-threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--after-host-threads", type=int, default=face_runner.HOST_THREADS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--faces", type=int, default=2)
    parser.add_argument("--photos", default="../shared/data/faces/identities")
    args = parser.parse_args()

    settings = FaceBenchSettings(face_photos(args.photos), "faces", args.faces)
    config = settings.config()
    models = FaceModels.create(config.face.detector, config.face.recogniser)
    after = args.after or str(face_runner.FaceStepGraphCache(
        models.recogniser, make_through(config.attack.through, config.attack.seed),
        StepSpec.from_config(config.attack)).path_for(config.face.work_size))
    work = load_faces(settings, models.detector)
    images = [to_tensor(photo[None]) for photo in work.photos]
    loops = {"torch": (face_loop("torch", models, config), torch.get_num_threads()),
             "onnxruntime before": (graph_loop(models, config, args.before), args.before_host_threads),
             "onnxruntime after": (graph_loop(models, config, after), args.after_host_threads)}

    def attack(loop, index: int) -> None:
        photo, face, region = work.faces[index]
        attack_face(models, images[photo], face, region, config, loop)

    for loop, _ in loops.values():
        attack(loop, 0)  # warm-up: sessions, lazy allocations
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    for round_index in range(args.rounds):
        for name, (loop, threads) in loops.items():
            face_runner.HOST_THREADS = threads  # the torch loop does not read it
            began = time.perf_counter()
            for index in range(len(work.faces)):
                attack(loop, index)
            seconds[name].append((time.perf_counter() - began) / len(work.faces))
            print(f"round {round_index + 1}: {name} {seconds[name][-1]:.3f} s per face", flush=True)
    for name, values in seconds.items():
        print(f"{name}: median {statistics.median(values):.3f} s per face ({', '.join(f'{v:.2f}' for v in values)})")
    for name in list(loops)[1:]:
        ratios = [torch_time / time_ for torch_time, time_ in zip(seconds["torch"], seconds[name])]
        print(f"torch / {name}: median {statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
