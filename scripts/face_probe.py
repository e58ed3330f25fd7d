"""Measure the face cloak on the development identities (a measurement, not a test; docs/faces.md).

For every photo of ``IDENTITIES/PERSON/*``: cloak it with a face preset, pass the cloak through each platform profile
(``codecs/platforms.py``) and ask each judge (dlib, evaluation only; SFace, the surrogate) whether it still matches
(a) the person's other clean photos it matched when both were clean (pairs) and (b) its own clean original (self).
Faces a judge no longer detects are counted apart as misses, never as broken. Prints a markdown table per preset.

    python scripts/face_probe.py --preset faces [--side 640] [--cache /tmp/face-cloaks]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

from comcloak.attacks.faces import FACE_PRESETS, FaceModels, cloak_faces, face_config
from comcloak.attacks.metrics import psnr
from comcloak.codecs.platforms import PROFILES, Platform
from comcloak.evaluation.face_judge import DlibJudge, SFaceJudge

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "faces" / "identities"


def load_photos(folder: Path, side: int) -> dict[str, np.ndarray]:
    """person/photo -> uint8 RGB with the longer side at most ``side`` (as the Deliver-1 measurements)."""
    photos = {}
    for path in sorted(folder.glob("*/*")):
        image = Image.open(path).convert("RGB")
        image.thumbnail((side, side), Image.Resampling.BILINEAR)
        photos[f"{path.parent.name}/{path.name}"] = np.asarray(image).copy()
    return photos


def region_psnr(clean: np.ndarray, cloak: np.ndarray, regions: list) -> float:
    """PSNR over the union of the cloaked regions."""
    mask = np.zeros(clean.shape[:2], bool)
    for region in regions:
        mask[region.top:region.top + region.side, region.left:region.left + region.side] = True
    if not mask.any():
        return float("inf")
    return psnr(clean[mask], cloak[mask])


def ssim_whole_and_region(clean: np.ndarray, cloak: np.ndarray, regions: list) -> tuple[float, float]:
    """SSIM (skimage, 7x7 windows, per channel) over the whole photo and averaged over the cloaked regions."""
    _, local = structural_similarity(clean, cloak, channel_axis=-1, data_range=255, full=True)
    local = local.mean(-1)
    mask = np.zeros(clean.shape[:2], bool)
    for region in regions:
        mask[region.top:region.top + region.side, region.left:region.left + region.side] = True
    return float(local.mean()), float(local[mask].mean()) if mask.any() else 1.0


def cloak_all(photos: dict[str, np.ndarray], preset: str, cache: Path | None, overrides: dict) -> tuple[dict, dict]:
    models, cloaks, stats = FaceModels.create(), {}, {}
    config = face_config(preset, **overrides)
    for name, photo in photos.items():
        cached = cache / preset / (name.replace("/", "__") + ".png") if cache else None
        started = time.perf_counter()
        result = cloak_faces(photo, config, models=models)
        cloaks[name] = result.photo
        attacked = [face for face in result.faces if face.region is not None]
        ssim, region_ssim = ssim_whole_and_region(photo, result.photo, [face.region for face in attacked])
        stats[name] = dict(faces=len(result.faces), status=result.status, seconds=time.perf_counter() - started,
                           ssim=ssim, region_ssim=region_ssim,
                           face_seconds=[face.seconds for face in attacked],
                           psnr=psnr(photo, result.photo),
                           region_psnr=region_psnr(photo, result.photo, [face.region for face in attacked]),
                           cosine=[face.cosine for face in attacked])
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(result.photo).save(cached)
        print(f"  {name}: {stats[name]['status']}, {stats[name]['psnr']:.1f} dB, {stats[name]['seconds']:.0f} s",
              flush=True)
    return cloaks, stats


def judge_all(photos: dict, cloaks: dict, judges: list) -> dict:
    """Per profile and judge: pairs/self counts (total, broken) and misses."""
    people = defaultdict(list)
    for name in photos:
        people[name.split("/")[0]].append(name)
    counts: dict = {}
    for judge in judges:
        clean = {name: (judge.faces(photo) or [None])[0] for name, photo in photos.items()}
        for profile in PROFILES:
            row = counts.setdefault(profile, {}).setdefault(judge.name, defaultdict(int))
            for name, cloak in cloaks.items():
                if clean[name] is None:
                    row["clean_miss"] += 1
                    continue
                found = judge.faces(Platform(profile).apply(cloak))
                others = [o for o in people[name.split("/")[0]] if o != name and clean[o] is not None
                          and judge.same_person(clean[name].descriptor, clean[o].descriptor)]
                if not found:
                    row["miss"] += 1
                    continue
                seen = found[0].descriptor
                row["self"] += 1
                row["self_broken"] += not judge.same_person(seen, clean[name].descriptor)
                for other in others:
                    row["pairs"] += 1
                    row["pairs_broken"] += not judge.same_person(seen, clean[other].descriptor)
    return counts


def table(counts: dict, stats: dict) -> str:
    lines = ["| profile | dlib pairs broken | dlib self broken | dlib misses | SFace pairs broken | "
             "SFace self broken | SFace misses |", "|---|---|---|---|---|---|---|"]
    for profile, judges in counts.items():
        cells = []
        for judge in ("dlib", "sface"):
            row = judges[judge]
            cells += [f"{row['pairs_broken']}/{row['pairs']} ({100 * row['pairs_broken'] / max(row['pairs'], 1):.0f}%)",
                      f"{row['self_broken']}/{row['self']} ({100 * row['self_broken'] / max(row['self'], 1):.0f}%)",
                      str(row["miss"])]
        lines.append(f"| {profile} | " + " | ".join(cells) + " |")
    whole = [s["psnr"] for s in stats.values()]
    region = [s["region_psnr"] for s in stats.values() if np.isfinite(s["region_psnr"])]
    seconds = [t for s in stats.values() for t in s["face_seconds"]]
    cosines = [c for s in stats.values() for c in s["cosine"] if c is not None]
    ssim = [s["ssim"] for s in stats.values()]
    region_ssim = [s["region_ssim"] for s in stats.values()]
    lines.append(f"\nwhole-photo PSNR mean {np.mean(whole):.1f} dB (min {np.min(whole):.1f}); face-region PSNR mean "
                 f"{np.mean(region):.1f} dB (min {np.min(region):.1f}); SSIM whole-photo mean {np.mean(ssim):.3f} "
                 f"(min {np.min(ssim):.3f}), face-region mean {np.mean(region_ssim):.3f} "
                 f"(min {np.min(region_ssim):.3f}); "
                 f"{np.mean(seconds):.1f} s per face "
                 f"({len(seconds)} faces); SFace cosine to the clean self at cloak time (no platform): mean "
                 f"{np.mean(cosines):.3f}, max {np.max(cosines):.3f}; status: "
                 f"{dict(Counter(s['status'] for s in stats.values()))}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="faces", choices=list(FACE_PRESETS))
    parser.add_argument("--identities", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--side", type=int, default=640)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--draws", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="save the cloaks here as PNG")
    parser.add_argument("--json", type=Path, default=None, help="write the counts and statistics here")
    args = parser.parse_args()
    photos = load_photos(args.identities, args.side)
    cloaks, stats = cloak_all(photos, args.preset, args.cache, dict(steps=args.steps, draws=args.draws))
    counts = judge_all(photos, cloaks, [DlibJudge(), SFaceJudge()])
    print(f"\npreset {args.preset}, {len(photos)} photos, longer side <= {args.side}\n")
    print(table(counts, stats))
    if args.json:
        args.json.write_text(json.dumps(dict(counts=counts, stats=stats), indent=1, default=float))


if __name__ == "__main__":
    main()
