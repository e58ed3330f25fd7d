"""The perturbation's RMS in a photo's flattest quarter, under each budget (uniform, texture, capped) at the same eps.

The flattest quarter and its RMS are the library's (``comcloak.attacks.metrics.flattest_pixels`` and
``flat_quarter_rms``, the figure ``comcloak eval --protocol platform`` reports): the 25 % of full-resolution pixels
with the lowest local luma spread (the texture budget's measure on the default working view), RMS on the 0-255 scale
over their three channels; also the whole photo's RMS and PSNR. One indicative figure for issue 26 (not a
measurement of protection).

Usage: python bench/flat_quarter.py PHOTO [--strength fast] [--backend torch]
"""

from __future__ import annotations

import argparse

import numpy as np

from comcloak.attacks.config import BUDGETS
from comcloak.attacks.metrics import flat_quarter_rms, flattest_pixels, psnr
from comcloak.codecs.photos import load_photo
from comcloak.engine.cloaker import Cloaker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo")
    parser.add_argument("--strength", default="fast")
    parser.add_argument("--backend", default="torch")
    args = parser.parse_args()
    photo = load_photo(args.photo).pixels
    mask = flattest_pixels(photo)
    for budget in BUDGETS:
        cloaker = Cloaker(strength=args.strength, backend=args.backend, protect="objects", budget=budget)
        cloak = cloaker.cloak_photos([photo])[0].cloaked
        rms = float(np.sqrt(np.mean((cloak.astype(np.float64) - photo) ** 2)))
        flat_rms = flat_quarter_rms(photo, cloak, mask)
        print(f"{budget:8s} eps {cloaker.config.eps_255:g}: flattest-quarter RMS {flat_rms:.3f}, whole-photo RMS "
              f"{rms:.3f}, PSNR {psnr(photo, cloak):.2f} dB")


if __name__ == "__main__":
    main()
