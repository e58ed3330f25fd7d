"""The face cloak (comcloak.attacks.faces): composition only inside the feathered regions, the budget at full
resolution, the identity loss, no-face photos, determinism, and (with the real SFace) one dev photo protected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comcloak.attacks.config import AttackConfigError
from comcloak.attacks.faces import FaceModels, cloak_faces, face_config
from comcloak.attacks.faces.compose import face_region, feather_mask
from comcloak.attacks.loss import goal_weights, loss_gradient, per_image_loss
from comcloak.models.faces import FaceDetection

TINY = dict(steps=2, draws=1, through="none", detector="tiny_yunet", recogniser="tiny_sface", min_psnr=0.0)


def face(x: float, y: float, side: float) -> FaceDetection:
    """A face box with landmarks placed as on a frontal face."""
    unit = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    return FaceDetection((x, y, side, side), unit * side + [x, y], 0.99)


@pytest.fixture(scope="module")
def tiny_models() -> FaceModels:
    return FaceModels.create("tiny_yunet", "tiny_sface")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = rng.integers(40, 216, (12, 16, 3)).repeat(8, 0).repeat(8, 1)
    return (smooth + rng.integers(-20, 21, smooth.shape)).clip(0, 255).astype(np.uint8)  # 96 x 128


def test_the_cloak_changes_pixels_only_inside_the_feathered_regions(photo: np.ndarray, tiny_models) -> None:
    config = face_config(eps=12, work_size=48, **TINY)
    faces = [face(10, 20, 36), face(80, 40, 40)]
    result = cloak_faces(photo, config, models=tiny_models, detections=faces)
    changed = np.any(result.photo != photo, axis=-1)
    allowed = np.zeros(photo.shape[:2], bool)
    for record in result.faces:
        region = record.region
        mask = feather_mask(region, *photo.shape[:2], config.face.feather).numpy()
        rows, columns = region.slices()
        allowed[rows, columns] |= mask > 0
    assert changed.any() and not (changed & ~allowed).any()
    assert [record.steps for record in result.faces] == [2, 2]


@pytest.mark.parametrize("work_size", [32, 160])  # the region shrunk and enlarged for the loop
def test_the_budget_holds_at_full_resolution(photo: np.ndarray, tiny_models, work_size: int) -> None:
    config = face_config(eps=6, work_size=work_size, **TINY)
    result = cloak_faces(photo, config, models=tiny_models, detections=[face(40, 30, 40)])
    difference = np.abs(result.photo.astype(int) - photo.astype(int))
    assert 0 < difference.max() <= 6


def test_regions_are_padded_squares_inside_the_photo() -> None:
    region = face_region((100.0, 50.0, 40.0, 60.0), 480, 640, 0.5)
    assert region.side == 120 and (region.top, region.left) == (20, 60)
    edge = face_region((0.0, 0.0, 50.0, 50.0), 80, 640, 0.5)
    assert (edge.top, edge.left, edge.side) == (0, 0, 80)
    mask = feather_mask(edge, 80, 640, 0.25)
    assert mask[0, 0] == 1 and mask[40, -1] < 0.1  # no ramp on the photo's border, a ramp inside it


def test_the_identity_loss_is_the_similarity_and_its_gradient_autograds() -> None:
    similarities = (2 * torch.rand(6, 3, dtype=torch.float64) - 1).requires_grad_(True)
    w = goal_weights(torch.tensor([0, 1, 2, 0, 1, 2]), 3, targeted=False, dtype=torch.float64)
    loss = per_image_loss(similarities, w, "identity")
    torch.testing.assert_close(loss, similarities.detach()[torch.arange(6), [0, 1, 2, 0, 1, 2]])
    (expected,) = torch.autograd.grad(loss.sum(), similarities)
    torch.testing.assert_close(loss_gradient(similarities.detach(), w, "identity"), expected, rtol=0, atol=0)


def test_a_photo_without_faces_is_reported_as_such(photo: np.ndarray, tiny_models) -> None:
    result = cloak_faces(photo, face_config(**TINY), models=tiny_models, detections=[])
    assert result.status == "no faces" and result.faces == () and np.array_equal(result.photo, photo)
    small = cloak_faces(photo, face_config(**TINY), models=tiny_models, detections=[face(5, 5, 20)])
    assert small.status == "not protected" and small.faces[0].region is None and not small.faces[0].protected
    assert np.array_equal(small.photo, photo)


def test_the_cloak_is_deterministic_and_seeded(photo: np.ndarray, tiny_models) -> None:
    faces = [face(40, 30, 40)]
    config = face_config(work_size=48, **{**TINY, "draws": 2, "through": "diffjpeg:50"})
    first = cloak_faces(photo, config, models=tiny_models, detections=faces).photo
    assert np.array_equal(first, cloak_faces(photo, config, models=tiny_models, detections=faces).photo)
    other = cloak_faces(photo, face_config(work_size=48, seed=1, **{**TINY, "draws": 2}), models=tiny_models,
                        detections=faces).photo
    assert not np.array_equal(first, other)


def test_face_settings_are_validated() -> None:
    with pytest.raises(AttackConfigError, match="unknown face preset"):
        face_config("fastest")
    with pytest.raises(AttackConfigError, match="whole region"):
        face_config(whole_image_rate=0.5)
    with pytest.raises(AttackConfigError, match="padding"):
        face_config(padding=-1.0)
    assert face_config("faces-strong").attack.eps_255 > face_config("faces").attack.eps_255


def test_unchecked_records_carry_no_verdict_and_the_same_pixels(photo: np.ndarray, tiny_models, monkeypatch) -> None:
    from comcloak.attacks.faces import cloak as face_cloak

    faces, config = [face(40, 30, 40)], face_config(work_size=48, **TINY)
    checked = cloak_faces(photo, config, models=tiny_models, detections=faces)
    monkeypatch.setattr(face_cloak, "check_face", lambda *args: pytest.fail("check=False checked a face"))
    unchecked = cloak_faces(photo, config, models=tiny_models, detections=faces, check=False)
    assert np.array_equal(checked.photo, unchecked.photo)
    [record] = unchecked.faces
    assert record.cosine is None and not record.protected and record.region == checked.faces[0].region
