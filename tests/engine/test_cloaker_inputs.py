"""Issue 23, defect 11: what ``Cloaker.cloak_photos`` is given is checked up front — a batch size that is not a
positive integer, or a photo under the floor ``comcloak cloak`` applies (``too_small_reason``), is one clear
ValueError, never ``[None, None]``, a ``range()`` error or a torch convolution error."""

from __future__ import annotations

import numpy as np
import pytest

from comcloak.engine import CloakInputError
from comcloak.engine.cloaker import Cloaker, too_small_reason
from comcloak.errors import UserError


@pytest.fixture(scope="module")
def cloaker() -> Cloaker:
    return Cloaker(classifier="tiny_classifier", through="none", steps=1, attack_size=32, device="cpu")


def photo(height: int = 40, width: int = 48) -> np.ndarray:
    return np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("batch_size", [-1, 0, 2.0, True])
def test_a_batch_size_that_is_not_a_count_is_refused(cloaker: Cloaker, batch_size) -> None:
    image = photo()
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        cloaker.cloak_photos([image, image], batch_size=batch_size)


@pytest.mark.parametrize(("height", "width"), [(8, 8), (0, 64), (64, 0), (31, 400)])
def test_a_photo_under_the_cli_floor_is_refused_with_its_reason(cloaker: Cloaker, height: int, width: int) -> None:
    with pytest.raises(CloakInputError) as raised:
        cloaker.cloak_photos([photo(), photo(height, width)], batch_size=2)
    assert str(raised.value) == f"photo 1: {too_small_reason(width, height)}"
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, UserError)


def test_photos_at_the_floor_are_cloaked(cloaker: Cloaker) -> None:
    results = cloaker.cloak_photos([photo(32, 32), photo(32, 40)], batch_size=1)
    assert [result.cloaked.shape for result in results] == [(32, 32, 3), (32, 40, 3)]
