from __future__ import annotations

import pytest

from comcloak.models import IMAGENET_NUM_CLASSES, imagenet_class_name


def test_known_names() -> None:
    assert IMAGENET_NUM_CLASSES == 1000
    assert imagenet_class_name(0) == "tench"
    assert imagenet_class_name(967) == "espresso"
    assert imagenet_class_name(282) == "tiger cat"
    assert imagenet_class_name(450) == "bobsled"
    assert all(imagenet_class_name(i) for i in range(IMAGENET_NUM_CLASSES))


@pytest.mark.parametrize("index", [-1, 1000])
def test_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        imagenet_class_name(index)
