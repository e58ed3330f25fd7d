"""Before/after crop of a photo's flattest region at 2x zoom: does the cloak leave a visible pattern on flat sky?

Cloaks the photo (default the bundled ``rocket.jpg``) once per ``--flags`` set (``comcloak cloak`` options, e.g.
``--strength balanced`` or ``--strength balanced --budget texture``), cuts the ``--side`` x ``--side`` square of the
original with the lowest mean flatness (``comcloak.attacks.metrics.flattest_box``: the texture budget's measure, not
chosen by hand), and writes original | each cloak, zoomed by pixel repetition, labelled with each cloak's RMS change
in that square (0-255), to OUT (PNG). Prints the box and the figures.

Usage: python scripts/sky_crop.py OUT.png [--flags="--strength balanced"] [--flags="--strength balanced --budget
texture"] [--photo PATH] [--side 128] [--zoom 2]
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np

from comcloak.attacks.metrics import flattest_box, psnr
from comcloak.cli.main import build_parser
from comcloak.cli.options import build_cloaker
from comcloak.codecs.photos import load_photo
from comcloak.evaluation.sheet import write_zoom_strip
from comcloak.samples import sample_photos

DEFAULT_FLAGS = "--strength balanced"


def cloak_with(photo_path: Path, flags: str) -> np.ndarray:
    """The photo cloaked as ``comcloak cloak PHOTO FLAGS`` would (in memory; nothing is written)."""
    # -o: the cloak command requires one; nothing is written there (the Cloaker is built and run here).
    args = build_parser().parse_args(["cloak", str(photo_path), "-o", "unused", *shlex.split(flags)])
    return build_cloaker(args).cloak_photos([load_photo(photo_path).pixels])[0].cloaked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--flags", action="append",
                        help=f"comcloak cloak options in one string, repeatable, optionally after a panel label and "
                             f"': ' ('before: --strength balanced --budget uniform') (default {DEFAULT_FLAGS!r})")
    parser.add_argument("--photo", type=Path, default=None, help="default: the bundled rocket.jpg")
    parser.add_argument("--side", type=int, default=128, help="side of the square, full-resolution pixels")
    parser.add_argument("--zoom", type=int, default=2)
    args = parser.parse_args()
    photo_path = args.photo or next(path for path in sample_photos() if path.name == "rocket.jpg")
    original = load_photo(photo_path).pixels
    top, left = flattest_box(original, args.side)
    box = (slice(top, top + args.side), slice(left, left + args.side))
    print(f"{photo_path.name}: flattest {args.side}x{args.side} box at top {top}, left {left}")
    panels = [("original", original[box])]
    for given in args.flags or [DEFAULT_FLAGS]:
        label, _, flags = given.rpartition(": ")
        cloak = cloak_with(photo_path, flags)
        change = cloak[box].astype(np.float64) - original[box]
        rms = float(np.sqrt(np.mean(change**2)))
        print(f"{flags}: box RMS {rms:.2f}/255, max {np.abs(change).max():.0f}; whole photo PSNR "
              f"{psnr(original, cloak):.2f} dB")
        panels.append((f"{label or flags} (box RMS {rms:.2f})", cloak[box]))
    print(f"wrote {write_zoom_strip(panels, args.out, args.zoom)}")


if __name__ == "__main__":
    main()
