"""Fixtures of the face tests: the development identities (skip when ../shared/data/faces and
$COMCLOAK_FACES_DIR are both missing)."""

from __future__ import annotations

import numpy as np
import pytest
from face_photos import identity_photos_at

PHOTO_SIDE = 800  # photos are judged with their longer side at most this (faster; every dev face stays > 80 px)


@pytest.fixture(scope="module")
def identity_photos() -> dict[str, np.ndarray]:
    """person/photo -> uint8 RGB, the longer side at most PHOTO_SIDE."""
    return identity_photos_at(PHOTO_SIDE)
