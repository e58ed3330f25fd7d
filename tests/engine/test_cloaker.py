"""Cloaker: shapes, budget, full-resolution composition, validation, thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from comcloak.engine import Cloaker, CloakerConfigError
from comcloak.engine.cloaker import attack_shape


@pytest.fixture(scope="module")
def cloaker() -> Cloaker:
    torch.manual_seed(0)
    return Cloaker(classifier="tiny_classifier", through="diffjpeg:50", eps=5, steps=3, attack_size=64, device="cpu")


@pytest.fixture(scope="module")
def objects_cloaker() -> Cloaker:
    """The same, objects only: the sample photos below have no faces, so the default's face step only runs the real
    YuNet detector on each (half of each cloak's time here); test_shared_across_threads keeps it."""
    return Cloaker(classifier="tiny_classifier", through="diffjpeg:50", eps=5, steps=3, attack_size=64, device="cpu",
                   protect="objects")


@pytest.fixture(scope="module")
def photos(sample_photos: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [sample_photos["chelsea"], sample_photos["coffee"], sample_photos["rocket"]]


def test_attack_shape_keeps_aspect_and_small_photos() -> None:
    assert attack_shape(3000, 4000, 224) == (224, 299)
    assert attack_shape(4000, 3000, 224) == (299, 224)
    assert attack_shape(100, 150, 224) == (100, 150)


def test_batch_keeps_shape_dtype_and_budget(cloaker: Cloaker) -> None:
    batch = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    cloaked = cloaker.cloak(batch)
    assert cloaked.shape == batch.shape and cloaked.dtype == np.uint8
    change = np.abs(cloaked.astype(int) - batch.astype(int))
    assert change.max() <= 5 and change.mean() > 1  # the sign steps move most pixels


def test_full_resolution_photos_of_mixed_sizes(objects_cloaker: Cloaker, photos: list[np.ndarray]) -> None:
    cloaker = objects_cloaker
    results = cloaker.cloak_photos(photos, batch_size=2)
    for photo, result in zip(photos, results):
        assert result.cloaked.shape == photo.shape
        assert np.abs(result.cloaked.astype(int) - photo.astype(int)).max() <= 5
        assert result.goal_label == result.clean_label  # untargeted: away from the clean label


def test_batching_does_not_change_results(objects_cloaker: Cloaker, photos: list[np.ndarray]) -> None:
    cloaker = objects_cloaker
    together = cloaker.cloak_photos(photos, batch_size=8)
    alone = [cloaker.cloak_photos([photo])[0] for photo in photos]
    for a, b in zip(together, alone):
        assert np.abs(a.cloaked.astype(int) - b.cloaked.astype(int)).max() <= 1  # float summation order only


def test_shared_across_threads(cloaker: Cloaker, photos: list[np.ndarray]) -> None:
    expected = [cloaker.cloak(photo[None])[0] for photo in photos]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda photo: cloaker.cloak(photo[None])[0], photos * 2))
    for index, result in enumerate(results):
        np.testing.assert_array_equal(result, expected[index % len(photos)])


def test_targeted_uses_the_paper_rule_or_a_given_class() -> None:
    photo = np.random.default_rng(1).integers(0, 256, (1, 48, 48, 3), dtype=np.uint8)
    paper = Cloaker(classifier="tiny_classifier", through="none", steps=2, targeted=True, device="cpu")
    result = paper.cloak_photos(list(photo))[0]
    assert result.goal_label == (result.clean_label + 500) % 1000
    given = Cloaker(classifier="tiny_classifier", through="none", steps=2, targeted=True, target=7, device="cpu")
    assert given.cloak_photos(list(photo))[0].goal_label == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 0}, "eps must be in"),
        ({"backend": "tpu"},
         "unknown backend 'tpu'; available: auto, torch, torch-cudagraph, torch-per-image, onnxruntime, tensorrt"),
        ({"target": 3}, "target is only meaningful with targeted=True"),
        ({"targeted": True, "target": 5000}, "target must be a class index in 0..999"),
        ({"attack_size": 8}, "attack_size must be at least 16"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(CloakerConfigError, match=message):
        Cloaker(classifier="tiny_classifier", through="none", device="cpu", **kwargs)


def test_input_validation(cloaker: Cloaker) -> None:
    with pytest.raises(ValueError, match="uint8 photos shaped"):
        cloaker.cloak(np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 photos shaped"):
        cloaker.cloak(np.zeros((16, 16, 3), np.uint8))
