"""The surrogate-side signal the face presets are chosen by (a measurement, not a test; docs/faces.md "Tuning").

dlib is the evaluation-only judge and is never run here. The signal is SFace's *cosine* to the clean embedding
(continuous, unlike the saturated broken/unbroken count) after each platform profile, with the face found and
aligned by **MTCNN**, a detector of another architecture that the cloak never sees (it attacks through YuNet's
landmarks and its own jitter): the attacker's detector and alignment are held out. For each cloaked photo of
``IDENTITIES/PERSON/*``: the cosine to its own clean original (self) and to the person's other clean photos that
MTCNN + SFace matched when both were clean (pairs). Reported: the mean cosine, the fraction below SFace's threshold
0.363 and below a stricter margin 0.2 (over all profiles, and the worst profile), MTCNN misses counted apart.

Held out: the photos are split in two (sorted order: odd -> ``tune``, even -> ``confirm``); candidates are compared on
``tune`` and the chosen ones confirmed on ``confirm``, with another ``--seed`` (other draws and jitter).

    python scripts/face_tune.py --preset faces --split tune --set texture_floor=0.4 --set eps=14 --label t04e14
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from face_probe import DEFAULT_DIR, load_photos, region_psnr
from PIL import Image

from comcloak.attacks.faces import FACE_PRESETS, FaceModels, cloak_faces, face_config
from comcloak.attacks.metrics import psnr
from comcloak.codecs.platforms import PROFILES, Platform
from comcloak.codecs.tensors import to_tensor
from comcloak.models.faces import SFACE_COSINE_THRESHOLD, align_faces, create_face_model, detect_faces_mtcnn

MARGIN = 0.2  # a stricter bar than SFace's threshold: broken with room to spare


class HeldOutSurrogate:
    """MTCNN (held out from the cloak) -> ArcFace alignment -> SFace on the 8-bit crop: unit embeddings."""

    def __init__(self) -> None:
        self.detector = create_face_model("mtcnn").eval()
        self.recogniser = create_face_model("sface").eval()

    def embedding(self, photo: np.ndarray) -> np.ndarray | None:
        faces = detect_faces_mtcnn(self.detector, photo)
        if not faces:
            return None
        best = max(faces, key=lambda face: face.box[2] * face.box[3])  # the main face, as the judges take it
        with torch.no_grad():
            crop = align_faces(to_tensor(np.ascontiguousarray(photo)[None]),
                               torch.from_numpy(np.asarray(best.landmarks, np.float32))[None])
            vector = self.recogniser(torch.round(crop * 255) / 255)[0].numpy().astype(np.float64)
        return vector / np.linalg.norm(vector)


def split_photos(photos: dict[str, np.ndarray], split: str) -> list[str]:
    names = sorted(photos)
    return names if split == "all" else [n for i, n in enumerate(names) if i % 2 == (1 if split == "tune" else 0)]


def parse_sets(items: list[str]) -> dict:
    values = {}
    for item in items:
        key, _, text = item.partition("=")
        values[key] = int(text) if text.lstrip("-").isdigit() else float(text)
    return values


def measure(photos: dict, names: list[str], cloaks: dict, judge: HeldOutSurrogate) -> dict:
    """Per profile: self and pair cosines and misses."""
    clean = {name: judge.embedding(photo) for name, photo in photos.items()}
    results: dict = {}
    for profile in PROFILES:
        row = results.setdefault(profile, defaultdict(list))
        for name in names:
            if clean[name] is None:
                row["clean_miss"].append(name)
                continue
            seen = judge.embedding(Platform(profile).apply(cloaks[name]))
            if seen is None:
                row["miss"].append(name)
                continue
            row["self"].append(float(seen @ clean[name]))
            person = name.split("/")[0]
            for other, vector in clean.items():
                if (other != name and other.split("/")[0] == person and vector is not None
                        and vector @ clean[name] >= SFACE_COSINE_THRESHOLD):
                    row["pairs"].append(float(seen @ vector))
    return results


def summary(results: dict) -> dict:
    out = {}
    for kind in ("self", "pairs"):
        every = np.array([c for row in results.values() for c in row[kind]])
        worst = min(np.mean(np.array(row[kind]) < SFACE_COSINE_THRESHOLD) for row in results.values())
        out[kind] = dict(mean=float(every.mean()), below_threshold=float(np.mean(every < SFACE_COSINE_THRESHOLD)),
                         below_margin=float(np.mean(every < MARGIN)), worst_profile_below_threshold=float(worst),
                         n=int(every.size))
    out["misses"] = sum(len(row["miss"]) for row in results.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="faces", choices=list(FACE_PRESETS))
    parser.add_argument("--set", action="append", default=[], help="a face_config value: key=number")
    parser.add_argument("--split", default="tune", choices=("tune", "confirm", "all"))
    parser.add_argument("--label", default="")
    parser.add_argument("--identities", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--side", type=int, default=640)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/face-tune"))
    parser.add_argument("--log", type=Path, default=None, help="append the summary as a JSON line here")
    args = parser.parse_args()
    photos = load_photos(args.identities, args.side)
    names = split_photos(photos, args.split)
    given = parse_sets(args.set)
    config = face_config(args.preset, **given)
    models, cloaks, whole, region, seconds = FaceModels.create(), {}, [], [], []
    for name in names:
        cached = args.cache / (args.label or args.preset) / (name.replace("/", "__") + ".png")
        if cached.exists():
            cloaks[name] = np.asarray(Image.open(cached)).copy()
            continue
        result = cloak_faces(photos[name], config, models=models)
        cloaks[name] = result.photo
        attacked = [face for face in result.faces if face.region is not None]
        seconds += [face.seconds for face in attacked]
        region.append(region_psnr(photos[name], result.photo, [face.region for face in attacked]))
        cached.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(result.photo).save(cached)
    whole = [psnr(photos[name], cloaks[name]) for name in names]
    started = time.perf_counter()
    report = dict(label=args.label, preset=args.preset, set=given, split=args.split, photos=len(names),
                  psnr_mean=float(np.mean(whole)), psnr_min=float(np.min(whole)),
                  region_psnr_mean=float(np.mean(region)) if region else None,
                  seconds_per_face=float(np.mean(seconds)) if seconds else None,
                  **summary(measure(photos, names, cloaks, HeldOutSurrogate())))
    report["judge_seconds"] = time.perf_counter() - started
    print(json.dumps(report))
    if args.log:
        with args.log.open("a") as log:
            log.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
