"""A face recogniser's own cosine threshold, calibrated on the dev identities (a measurement, not a test).

Every photo of ``IDENTITIES/PERSON/*`` (longer side at most ``--side``): its largest YuNet face, aligned to the
ArcFace template, the 8-bit crop embedded by each ``--recognisers`` model (as ``SFaceJudge`` computes it). Over every
pair of photos: the cosines of same-person and different-person pairs, their ranges, the ROC AUC (the fraction of
(same, different) pairs ordered correctly) and the threshold with the best *balanced* accuracy on these pairs (the
mean of the same-person and different-person rates, as there are far more different-person pairs; a midpoint between
two observed cosines, ties to the middle). A recogniser whose AUC is near 0.5 does not tell people apart at all.

    python scripts/face_threshold.py --recognisers sface
    python scripts/face_threshold.py --recognisers sface --mobilefacenet /tmp/mobilefacenet.safetensors  # converted
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from face_probe import DEFAULT_DIR, load_photos

from comcloak.cli.evaluate_faces import FACE_SIDE
from comcloak.codecs.tensors import to_tensor
from comcloak.models.faces import align_faces, create_face_model, detect_faces, load_mobilefacenet, recogniser_threshold


def crops_of(photos: dict[str, np.ndarray]) -> torch.Tensor:
    """(N, 3, 112, 112) 8-bit aligned crops of each photo's largest YuNet face."""
    detector = create_face_model("yunet")
    crops = []
    for name, photo in photos.items():
        faces = detect_faces(detector, photo)
        if not faces:
            raise SystemExit(f"no face found in {name}")
        face = max(faces, key=lambda f: f.box[2] * f.box[3])
        crop = align_faces(to_tensor(photo[None]), torch.from_numpy(np.asarray(face.landmarks, np.float32))[None])
        crops.append(torch.round(crop * 255) / 255)
    return torch.cat(crops)


def best_threshold(same: np.ndarray, different: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy): same person at cosine >= threshold."""
    values = np.sort(np.concatenate([same, different]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])
    balanced = np.array([((same >= t).mean() + (different < t).mean()) / 2 for t in candidates])
    best = np.flatnonzero(balanced == balanced.max())
    return float(candidates[best[len(best) // 2]]), float(balanced.max())


def spread(values: np.ndarray) -> list[float]:
    """[min, mean, max], rounded."""
    return [round(float(f(values)), 5) for f in (np.min, np.mean, np.max)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", default=str(DEFAULT_DIR))
    parser.add_argument("--recognisers", default="sface", help="registered recognisers, comma-separated")
    parser.add_argument("--mobilefacenet", type=Path, default=None,
                        help="also MobileFaceNet with these weights (scripts/convert_mobilefacenet.py's output)")
    parser.add_argument("--side", type=int, default=FACE_SIDE, help="longer side of each photo (eval's default)")
    args = parser.parse_args()
    photos = load_photos(Path(args.identities), args.side)
    people = [name.split("/")[0] for name in photos]
    crops = crops_of(photos)
    models = {name: create_face_model(name) for name in args.recognisers.split(",")}
    if args.mobilefacenet:
        models["mobilefacenet"] = load_mobilefacenet(args.mobilefacenet)
    for name, model in models.items():
        with torch.no_grad():
            unit = torch.nn.functional.normalize(model(crops), dim=-1).double().numpy()
        same, different = [], []
        for i, j in itertools.combinations(range(len(people)), 2):
            (same if people[i] == people[j] else different).append(float(unit[i] @ unit[j]))
        same, different = np.array(same), np.array(different)
        threshold, accuracy = best_threshold(same, different)
        print(json.dumps({"recogniser": name, "photos": len(people), "same_pairs": len(same),
                          "different_pairs": len(different), "same": spread(same), "different": spread(different),
                          "auc": round(float((same[:, None] > different[None]).mean()), 3),
                          "best_threshold": round(threshold, 5), "balanced_accuracy_at_best": round(accuracy, 3),
                          "declared_threshold": recogniser_threshold(model)}))


if __name__ == "__main__":
    main()
