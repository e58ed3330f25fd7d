"""Fixtures of the face tests: the development identities (skip when ../shared/data/faces and
$COMCLOAK_FACES_DIR are both missing)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

PHOTO_SIDE = 800  # photos are judged with their longer side at most this (faster; every dev face stays > 80 px)


def faces_dir() -> Path | None:
    """The development photos: $COMCLOAK_FACES_DIR, else ../shared/data/faces from the repository root."""
    env = os.environ.get("COMCLOAK_FACES_DIR")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "faces"
    return folder if (folder / "identities").is_dir() else None


@pytest.fixture(scope="module")
def identity_photos() -> dict[str, np.ndarray]:
    """person/photo -> uint8 RGB, the longer side at most PHOTO_SIDE."""
    from PIL import Image

    folder = faces_dir()
    if folder is None:
        pytest.skip("the development face photos are missing (../shared/data/faces or $COMCLOAK_FACES_DIR)")
    photos = {}
    for path in sorted((folder / "identities").glob("*/*")):
        image = Image.open(path).convert("RGB")
        image.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.BILINEAR)
        photos[f"{path.parent.name}/{path.name}"] = np.asarray(image).copy()
    return photos
