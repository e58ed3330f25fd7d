"""A before/after crop of a cloaked face at 2x zoom (nearest neighbour, so each pixel of the cloak is visible) for
docs/faces.md: the clean face, the cloak, and the difference amplified, side by side, as a PNG.

    python scripts/face_crop.py CLEAN.jpg CLOAK.png docs/faces-crop.png [--side 640] [--size 160]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from comcloak.models.faces import create_face_model, detect_faces

ZOOM = 2
DIFFERENCE_GAIN = 4  # the difference, x4 around mid-grey: where the budget went


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clean", type=Path)
    parser.add_argument("cloak", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--side", type=int, default=640, help="the clean photo's longer side, as the cloak's")
    parser.add_argument("--size", type=int, default=160, help="side of the crop around the face, pixels")
    args = parser.parse_args()
    image = Image.open(args.clean).convert("RGB")
    image.thumbnail((args.side, args.side), Image.Resampling.BILINEAR)
    clean = np.asarray(image)
    cloak = np.asarray(Image.open(args.cloak).convert("RGB"))
    if clean.shape != cloak.shape:
        raise SystemExit(f"the cloak is {cloak.shape[:2]}, the clean photo {clean.shape[:2]}: give --side")
    x, y, w, h = detect_faces(create_face_model("yunet").eval(), clean)[0].box
    top = int(np.clip(y + h / 2 - args.size / 2, 0, clean.shape[0] - args.size))
    left = int(np.clip(x + w / 2 - args.size / 2, 0, clean.shape[1] - args.size))
    rows, columns = slice(top, top + args.size), slice(left, left + args.size)
    before, after = clean[rows, columns], cloak[rows, columns]
    difference = np.clip(128 + DIFFERENCE_GAIN * (after.astype(int) - before.astype(int)), 0, 255).astype(np.uint8)
    strip = np.concatenate([before, after, difference], axis=1)
    Image.fromarray(strip).resize((strip.shape[1] * ZOOM, strip.shape[0] * ZOOM), Image.Resampling.NEAREST).save(
        args.out, optimize=True)


if __name__ == "__main__":
    main()
