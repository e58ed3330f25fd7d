"""The perturbation's RMS in a photo's flattest quarter, with the uniform and the texture budget at the same eps.

The flattest quarter: the 25 % of full-resolution pixels with the lowest local luma standard deviation (a 7-pixel
window, ``comcloak.attacks.budget.local_spread``). RMS on the 0-255 scale over those pixels' three channels, and over
the whole photo; PSNR of each cloak. One indicative figure for issue 26 (not a measurement of protection).

Usage: python bench/flat_quarter.py PHOTO [--strength fast] [--backend torch]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from comcloak.attacks.budget import local_spread
from comcloak.codecs.photos import load_photo
from comcloak.engine.cloaker import Cloaker

FLAT_SHARE = 0.25
WINDOW = 7


def flattest(photo: np.ndarray) -> np.ndarray:
    """Boolean (H, W): the FLAT_SHARE of pixels with the lowest local luma spread."""
    spread = local_spread(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255, WINDOW)[0, 0].numpy()
    return spread <= np.quantile(spread, FLAT_SHARE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo")
    parser.add_argument("--strength", default="fast")
    parser.add_argument("--backend", default="torch")
    args = parser.parse_args()
    photo = load_photo(args.photo).pixels
    mask = flattest(photo)
    for budget in ("uniform", "texture"):
        cloaker = Cloaker(strength=args.strength, backend=args.backend, protect="objects", budget=budget)
        change = cloaker.cloak_photos([photo])[0].cloaked.astype(np.float64) - photo
        flat_rms = float(np.sqrt((change[mask] ** 2).mean()))
        rms = float(np.sqrt((change**2).mean()))
        psnr = 20 * np.log10(255 / max(rms, 1e-12))
        print(f"{budget:8s} eps {cloaker.config.eps_255:g}: flattest-quarter RMS {flat_rms:.3f}, whole-photo RMS "
              f"{rms:.3f}, PSNR {psnr:.2f} dB")


if __name__ == "__main__":
    main()
