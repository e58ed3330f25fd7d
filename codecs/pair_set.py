"""Training pairs for ComModel, the CNN that imitates a compressor (ComReAdv): (original view, compressed view) —
the pair set, how views are cut (:class:`ViewSettings`), reading photos and the training crops. The two sources
that make pairs, :class:`~comcloak.codecs.pairs.SimulatedPairs` and :class:`~comcloak.codecs.pairs.PlatformPairs`,
are in :mod:`comcloak.codecs.pairs`, which re-exports everything here.

Bad photos and pairs never stop a build: each becomes a :class:`PairProblem` in :attr:`PairSet.problems`. Only a
request that cannot produce anything (a missing folder, no usable photo at all) raises :class:`PairDataError`.

A :class:`PairSet` holds every view in memory: ``2 * N * size * size * 3`` bytes for N pairs (about 300 KB per
pair at 224x224).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from comcloak.errors import UserError

from .base import check_image
from .photos import PHOTO_EXTENSIONS, PhotoError, load_rgb

logger = logging.getLogger(__name__)

#: Default side of a view: the paper protocol's 224x224 input.
DEFAULT_SIZE = 224
# RandomResizedCrop's aspect-ratio range and number of tries before falling back to the whole photo.
_RATIO = (3 / 4, 4 / 3)
_CROP_TRIES = 10


class PairDataError(UserError, ValueError):
    """The request as a whole cannot produce pairs (folder missing, no usable photo); the message is one line."""


@dataclass(frozen=True)
class PairProblem:
    """A photo or pair that was skipped, with a one-line reason; reported, never fatal."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class PairSet:
    """Pairs of views: ``originals[i]`` and ``compressed[i]`` are (size, size, 3) uint8 views of ``names[i]``.

    ``problems`` lists what was skipped while building the set.
    """

    originals: np.ndarray
    compressed: np.ndarray
    names: list[str]
    problems: list[PairProblem] = field(default_factory=list)

    def __post_init__(self) -> None:
        for what, views in (("originals", self.originals), ("compressed", self.compressed)):
            if not isinstance(views, np.ndarray) or views.dtype != np.uint8 or views.ndim != 4 or views.shape[3] != 3:
                shape = getattr(views, "shape", None)
                raise ValueError(f"PairSet.{what} must be an (N, size, size, 3) uint8 array, got shape {shape}")
        if self.originals.shape != self.compressed.shape:
            raise ValueError(
                f"PairSet views differ in shape: originals {self.originals.shape}, compressed {self.compressed.shape}"
            )
        if self.originals.shape[1] != self.originals.shape[2]:
            raise ValueError(f"PairSet views must be square, got {self.originals.shape[1:3]}")
        if len(self.names) != self.originals.shape[0]:
            raise ValueError(f"PairSet has {self.originals.shape[0]} pairs but {len(self.names)} names")

    def __len__(self) -> int:
        return self.originals.shape[0]

    @property
    def size(self) -> int:
        """Side of every (square) view."""
        return self.originals.shape[1]


# ---------------------------------------------------------------------------------------------------- photos


def split_held_out(paths: Iterable[str | os.PathLike], fraction_denominator: int = 3) -> tuple[list[Path], list[Path]]:
    """Split photos into (train, held_out) by file name: held out iff ``sha1(name)[0] % fraction_denominator == 0``.

    The split depends on each name alone, so it is the same in any folder and adding photos never moves an
    existing photo to the other side. Both lists are sorted by name.
    """
    if isinstance(fraction_denominator, bool) or not isinstance(fraction_denominator, int) or fraction_denominator < 1:
        raise ValueError(f"fraction_denominator must be an integer >= 1, got {fraction_denominator!r}")
    train: list[Path] = []
    held_out: list[Path] = []
    for path in sorted((Path(p) for p in paths), key=lambda p: (p.name, str(p))):
        first_byte = hashlib.sha1(path.name.encode()).digest()[0]
        (held_out if first_byte % fraction_denominator == 0 else train).append(path)
    return train, held_out


def list_photos(folder: str | os.PathLike) -> list[Path]:
    """Photos directly in ``folder`` (.jpg .jpeg .png .webp .tif .tiff .bmp, any case), sorted by name.

    Raises PairDataError when the folder is missing or is not a folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise PairDataError(f"photo folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise PairDataError(f"{str(folder)!r} is a file, not a photo folder")
    photos = [p for p in folder.iterdir() if p.suffix.lower() in PHOTO_EXTENSIONS and p.is_file()]
    return sorted(photos, key=lambda p: p.name)


def resize_box(image: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The ``box`` (left, top, right, bottom) of ``image`` resized to size x size with Pillow's bicubic."""
    resized = Image.fromarray(np.ascontiguousarray(image), mode="RGB").resize(
        (size, size), Image.Resampling.BICUBIC, box=box
    )
    return np.array(resized, dtype=np.uint8)


def paper_view(photo: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The paper protocol's view of a photo: the whole photo resized (not cropped) to size x size, bicubic."""
    check_image(photo, "photo")
    check_positive_int(size, "size")
    return np.array(Image.fromarray(np.ascontiguousarray(photo)).resize((size, size), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------------------------------------------- helpers


def check_positive_int(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class ViewSettings:
    """How training views are cut from each photo, by :class:`~comcloak.codecs.pairs.SimulatedPairs` and
    :class:`~comcloak.codecs.pairs.PlatformPairs`: ``views_per_photo`` RandomResizedCrops (area fraction uniform in
    ``scale``, aspect ratio log-uniform in [3/4, 4/3], the whole photo after 10 misses) resized to ``size`` x
    ``size``, mirrored with probability 0.5 when ``flip``; ``seed`` seeds each photo's own generator.

    Raises ValueError when made with a size, count or seed that is not a positive (seed: non-negative) integer or a
    scale that is not ``0 < low <= high <= 1``.

    Example:
        >>> SimulatedPairs(photos, "jpeg:50", ViewSettings(size=224, views_per_photo=4, seed=1)).build()
    """

    size: int = DEFAULT_SIZE
    views_per_photo: int = 16
    scale: tuple[float, float] = (0.3, 1.0)
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int(self.size, "size")
        check_positive_int(self.views_per_photo, "views_per_photo")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        try:
            low, high = (float(s) for s in self.scale)
        except (TypeError, ValueError):
            raise ValueError(f"scale must be a pair (low, high) of area fractions, got {self.scale!r}") from None
        if not (0 < low <= high <= 1):
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale!r}")
        object.__setattr__(self, "scale", (low, high))
        object.__setattr__(self, "flip", bool(self.flip))


def random_box(
    rng: np.random.Generator, height: int, width: int, scale: tuple[float, float]
) -> tuple[int, int, int, int]:
    """A RandomResizedCrop box (left, top, right, bottom), as torchvision draws it.

    Area fraction uniform in ``scale``, aspect ratio (w/h) log-uniform in [3/4, 4/3]; after 10 boxes that do not
    fit, the whole photo.
    """
    area = height * width
    log_low, log_high = math.log(_RATIO[0]), math.log(_RATIO[1])
    for _ in range(_CROP_TRIES):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        box_width = round(math.sqrt(target_area * aspect))
        box_height = round(math.sqrt(target_area / aspect))
        if 0 < box_width <= width and 0 < box_height <= height:
            top = int(rng.integers(0, height - box_height + 1))
            left = int(rng.integers(0, width - box_width + 1))
            return left, top, left + box_width, top + box_height
    return 0, 0, width, height


def scale_box(
    box: tuple[float, float, float, float], source: tuple[int, int], target: tuple[int, int]
) -> tuple[float, float, float, float]:
    """``box`` in an image of (height, width) ``source`` mapped proportionally onto one of size ``target``."""
    sy, sx = target[0] / source[0], target[1] / source[1]
    left, top, right, bottom = box
    return left * sx, top * sy, right * sx, bottom * sy


def photo_rngs(seed: int, count: int) -> list[np.random.Generator]:
    """One generator per photo, all from ``seed``: a photo's views do not depend on whether others decoded."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(count)]


class PairBuffer:
    """Preallocated (capacity, size, size, 3) arrays filled photo by photo, so a build does not copy every view."""

    def __init__(self, capacity: int, size: int) -> None:
        self.originals = np.empty((capacity, size, size, 3), dtype=np.uint8)
        self.compressed = np.empty((capacity, size, size, 3), dtype=np.uint8)
        self.names: list[str] = []

    def add(self, name: str, originals: Sequence[np.ndarray], compressed: Sequence[np.ndarray]) -> None:
        start = len(self.names)
        for offset, (original, squeezed) in enumerate(zip(originals, compressed, strict=True)):
            self.originals[start + offset] = original
            self.compressed[start + offset] = squeezed
        self.names.extend([name] * len(originals))

    def finish(self, problems: list[PairProblem], what: str) -> PairSet:
        count = len(self.names)
        if count == 0:
            first = f"; first problem: {problems[0]}" if problems else ""
            raise PairDataError(f"no usable pairs from {what} ({len(problems)} skipped){first}")
        originals, compressed = self.originals, self.compressed
        if count < originals.shape[0]:  # some photos were skipped: drop the unused tail
            originals, compressed = originals[:count].copy(), compressed[:count].copy()
        logger.info("built %d pairs from %s, %d skipped", count, what, len(problems))
        return PairSet(originals, compressed, self.names, problems)


def note_problem(problems: list[PairProblem], path: Path, reason: str) -> None:
    logger.info("skipping %s: %s", path, reason)
    problems.append(PairProblem(path, reason))


def decode_or_note(path: Path, problems: list[PairProblem]) -> np.ndarray | None:
    try:
        return load_rgb(path)
    except PhotoError as error:
        note_problem(problems, path, error.reason)
        return None



# ---------------------------------------------------------------------------------------------------- training


def training_crops(
    pairs: PairSet, batch: int, crop: int, rng: np.random.Generator, align: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` random pairs (with replacement), each cut to the same random crop x crop window in both views.

    The window's top-left offsets are multiples of ``align``. For pure-codec pairs the codec's block grid starts
    at the view's top-left pixel, so with ``align`` a multiple of the codec's block (16 covers JPEG's 8x8 blocks
    and 4:2:0 16x16 MCUs, and VP8's 16x16 macroblocks) every crop keeps the codec's grid aligned with the
    model's own (stride-8/16) grid, instead of teaching it artifacts at random phases. ``crop`` must be a
    multiple of ``align`` for the same reason. Returns two (batch, crop, crop, 3) uint8 arrays (copies).
    """
    if not isinstance(pairs, PairSet):
        raise TypeError(f"pairs must be a PairSet, got {type(pairs).__name__}")
    check_positive_int(batch, "batch")
    check_positive_int(crop, "crop")
    check_positive_int(align, "align")
    if len(pairs) == 0:
        raise ValueError("cannot sample training crops from an empty PairSet")
    if crop > pairs.size:
        raise ValueError(f"crop {crop} is larger than the {pairs.size}x{pairs.size} views")
    if crop % align != 0:
        raise ValueError(f"crop {crop} must be a multiple of align {align}")
    indices = rng.integers(0, len(pairs), size=batch)
    positions = (pairs.size - crop) // align + 1
    tops = rng.integers(0, positions, size=batch) * align
    lefts = rng.integers(0, positions, size=batch) * align
    originals = np.empty((batch, crop, crop, 3), dtype=np.uint8)
    compressed = np.empty((batch, crop, crop, 3), dtype=np.uint8)
    for row, (index, top, left) in enumerate(zip(indices, tops, lefts)):
        originals[row] = pairs.originals[index, top : top + crop, left : left + crop]
        compressed[row] = pairs.compressed[index, top : top + crop, left : left + crop]
    return originals, compressed

