"""The development face photos (../shared/data/faces or $COMCLOAK_FACES_DIR), for the face tests' fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def faces_dir() -> Path | None:
    """The development photos: $COMCLOAK_FACES_DIR, else ../shared/data/faces from the repository root."""
    env = os.environ.get("COMCLOAK_FACES_DIR")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "faces"
    return folder if (folder / "identities").is_dir() else None


def identity_photos_at(side: int) -> dict[str, np.ndarray]:
    """person/photo -> uint8 RGB with the longer side at most ``side``; skips the test when the photos are missing."""
    from PIL import Image

    folder = faces_dir()
    if folder is None:
        pytest.skip("the development face photos are missing (../shared/data/faces or $COMCLOAK_FACES_DIR)")
    photos = {}
    for path in sorted((folder / "identities").glob("*/*")):
        image = Image.open(path).convert("RGB")
        image.thumbnail((side, side), Image.Resampling.BILINEAR)
        photos[f"{path.parent.name}/{path.name}"] = np.asarray(image).copy()
    return photos
