"""Shared test images for the codecs tests: real photos from scikit-image's bundled samples, scaled down."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image


def _load(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def square_photo(name: str, size: int) -> np.ndarray:
    """Centre-cropped square photo resized to size x size (the paper protocol's 224x224 input)."""
    image = _load(name)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    return np.array(image, dtype=np.uint8)


def small_photo(name: str, longest: int = 160) -> np.ndarray:
    """Photo scaled so its longest side is ``longest``, aspect kept (chelsea and coffee are landscape)."""
    image = _load(name)
    width, height = image.size
    scale = longest / max(width, height)
    image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.LANCZOS)
    return np.array(image, dtype=np.uint8)


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Two small landscape photos, 160 px wide (chelsea 106x160, coffee 107x160, HxW)."""
    return [small_photo("chelsea"), small_photo("coffee")]


@pytest.fixture(scope="session")
def photo(photos: list[np.ndarray]) -> np.ndarray:
    return photos[0]


@pytest.fixture(scope="session")
def photos_224() -> dict[str, np.ndarray]:
    """The three 224x224 photos the DiffJPEG accuracy bounds were measured on."""
    return {name: square_photo(name, 224) for name in ("chelsea", "coffee", "astronaut")}
