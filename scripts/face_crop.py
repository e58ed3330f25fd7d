"""A before/after crop of a face at 2x zoom (docs/faces.md): original | cloak | amplified difference, labelled.

Cloaks one photo with a face preset and writes the largest cloaked face's region (the padded square the cloak may
change) from the original, from the cloak and as the difference amplified so that +-eps spans black to white, each
enlarged 2x with nearest-neighbour (every pixel of the cloak visible as it is).

    python scripts/face_crop.py samples/astronaut.jpg --preset faces --out docs/images/face-before-after.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from comcloak.atomic import atomic_writer
from comcloak.attacks.faces import DEFAULT_FACE_PRESET, FACE_PRESETS, cloak_faces, face_config
from comcloak.attacks.metrics import psnr, ssim
from comcloak.codecs.photos import load_photo
from comcloak.evaluation.sheet import amplified_difference

ZOOM = 2
GAP, CAPTION = 8, 34  # pixels between panels; height of the caption band above them


def before_after(photo: np.ndarray, cloak: np.ndarray, region, eps: float, title: str) -> Image.Image:
    """The three panels of ``region`` (a :class:`~comcloak.attacks.faces.compose.Region`) at ``ZOOM``x, captioned."""
    rows, columns = region.slices()
    before, after = photo[rows, columns], cloak[rows, columns]
    panels = [("original", before), ("cloak", after),
              (f"difference x{127 / eps:.0f} (grey = unchanged)", amplified_difference(before, after, eps))]
    side = region.side * ZOOM
    sheet = Image.new("RGB", (3 * side + 4 * GAP, side + CAPTION + GAP), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((GAP, 4), title, fill="black")
    for index, (label, pixels) in enumerate(panels):
        left = GAP + index * (side + GAP)
        draw.text((left, CAPTION - 14), label, fill="black")
        sheet.paste(Image.fromarray(pixels).resize((side, side), Image.Resampling.NEAREST), (left, CAPTION))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("--preset", default=DEFAULT_FACE_PRESET, choices=list(FACE_PRESETS))
    parser.add_argument("--out", type=Path, default=Path("docs/images/face-before-after.png"))
    args = parser.parse_args()
    photo = load_photo(args.photo).pixels
    config = face_config(args.preset)
    result = cloak_faces(photo, config)
    cloaked = [face for face in result.faces if face.region is not None]
    if not cloaked:
        raise SystemExit(f"{args.photo}: no face large enough to cloak ({result.status})")
    face = max(cloaked, key=lambda record: record.region.side)
    rows, columns = face.region.slices()
    title = (f"{args.photo.name}, preset {args.preset} (eps {config.attack.eps_255:g}/255), {ZOOM}x nearest: "
             f"whole-photo PSNR {psnr(photo, result.photo):.1f} dB, face region PSNR "
             f"{psnr(photo[rows, columns], result.photo[rows, columns]):.1f} dB / SSIM "
             f"{ssim(photo[rows, columns], result.photo[rows, columns]):.3f}; surrogate: "
             f"{'protected' if face.protected else 'not protected'}")
    sheet = before_after(photo, result.photo, face.region, config.attack.eps_255, title)
    with atomic_writer(args.out) as handle:
        sheet.save(handle, format="PNG")
    print(f"{args.out}: {title}")


if __name__ == "__main__":
    main()
