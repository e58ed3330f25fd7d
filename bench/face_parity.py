"""How closely the face cloak on ONNX Runtime matches the torch reference on real faces, against torch's own float32
vs float64 disagreement: each face's whole loop (a face preset) run three ways (torch float32, the reference; the
exported face step on ONNX Runtime; torch in float64), composed into the photo, then per photo the fraction of 8-bit
values of the face regions that differ from the reference and the largest difference, and per face the surrogate's
cosine to the clean face on each cloak (``check_face``: YuNet on the 8-bit cloak, alignment, SFace).

Usage: python bench/face_parity.py PHOTOS_OR_FOLDER [--faces 4] [--json bench/results/face-parity-cpu.json]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from comcloak.attacks.faces.cloak import FaceModels, attack_face, check_face, face_loop
from comcloak.attacks.faces.compose import Composer
from comcloak.attacks.loop import run_attack
from comcloak.cli.bench import face_photos
from comcloak.codecs.tensors import to_tensor
from comcloak.engine.backends.face_runner import FaceOnnxRuntimeLoop
from comcloak.engine.bench_results import library_versions, machine_description, write_results
from comcloak.engine.face_throughput import FaceBenchSettings, load_faces

WAYS = ("torch", "onnxruntime", "torch-float64")


def perturbations(settings: FaceBenchSettings, models: FaceModels, work, way: str) -> list[torch.Tensor]:
    """Every face's working-view perturbation (float32) by one way of running the loop."""
    config = settings.config()
    images = [to_tensor(photo[None]) for photo in work.photos]
    if way == "onnxruntime":
        loop, used = FaceOnnxRuntimeLoop(models.recogniser, config, settings.cache_dir), models
    elif way == "torch":
        loop, used = face_loop("torch", models, config), models
    else:  # the same loop in float64: the recogniser, the stand-in, the views and the draws
        used = FaceModels(models.detector, copy.deepcopy(models.recogniser).double())
        labels = torch.zeros(1, dtype=torch.long)
        images = [image.double() for image in images]

        def loop(view, x0, through, eps_map):  # noqa: ANN001, ANN202 - attack_face's loop
            return run_attack(view, x0, labels, config.attack, copy.deepcopy(through).double(),
                              eps_map=None if eps_map is None else eps_map.double())
    return [attack_face(used, images[index], face, region, config, loop)[0].float()
            for index, face, region in work.faces]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--faces", type=int, default=4)
    parser.add_argument("--preset", default="faces")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = FaceBenchSettings(face_photos(args.photos), args.preset, args.faces, cache_dir=args.cache_dir)
    config = settings.config()
    models = FaceModels.create(config.face.detector, config.face.recogniser)
    work = load_faces(settings, models.detector)
    deltas = {way: perturbations(settings, models, work, way) for way in WAYS}
    cloaks: dict[str, list[np.ndarray]] = {}
    for way, found in deltas.items():
        composers = [Composer(to_tensor(photo[None]), config.face) for photo in work.photos]
        for (index, _, region), delta in zip(work.faces, found):
            composers[index].add(region, delta)
        cloaks[way] = [composers[i].compose(photo, config.attack.eps) for i, photo in enumerate(work.photos)]
    rows = []
    for index, face, region in work.faces:
        rows_of_region = region.slices()
        row = {"photo": Path(settings.photos[index]).name, "region": region.side}
        reference = cloaks["torch"][index][rows_of_region].astype(np.int16)
        for way in WAYS:
            values = cloaks[way][index][rows_of_region].astype(np.int16)
            check = check_face(models, cloaks[way][index], to_tensor(work.photos[index][None]), face)
            row[way] = {"cosine": None if check is None else round(check.cosine, 4),
                        "fraction_differing": round(float(np.mean(values != reference)), 4),
                        "max_difference": int(np.abs(values - reference).max())}
        rows.append(row)
    payload = {"machine": machine_description(), "versions": library_versions(), "preset": args.preset,
               "results": rows}
    lines = [f"Machine: {payload['machine']}  ", f"Preset {args.preset}; the face regions' 8-bit values against torch "
             "float32 (the reference); SFace cosine of each cloak to the clean face (protected below 0.363)", "",
             "| photo | onnxruntime: values differing, max | torch float64: values differing, max | cosine torch / "
             "onnxruntime / float64 |", "|---|---:|---:|---|"]
    for row in rows:
        ort, f64 = row["onnxruntime"], row["torch-float64"]
        lines.append(f"| {row['photo']} | {100 * ort['fraction_differing']:.1f}%, {ort['max_difference']} | "
                     f"{100 * f64['fraction_differing']:.1f}%, {f64['max_difference']} | {row['torch']['cosine']} / "
                     f"{ort['cosine']} / {f64['cosine']} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.json:
        write_results(payload, args.json, table)


if __name__ == "__main__":
    main()
