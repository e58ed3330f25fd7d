"""Training pairs for ComModel, the CNN that imitates a compressor (ComReAdv): (original view, compressed view).

Both views of a pair are HxWx3 uint8 at the resolution the attack sees (224x224 by default). Two sources:

* :class:`SimulatedPairs`: a folder of photos and a real :class:`~comcloak.codecs.base.Codec` (``jpeg:50``,
  ``resize:2048+jpeg:85``); the codec is run on every view, so the pairs are exact.
* :class:`PlatformPairs`: originals and the copies a platform served back, matched by file stem.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from comcloak.errors import UserError

from .base import Codec, CodecUnavailableError, check_image
from .photos import PHOTO_EXTENSIONS, PhotoError, load_rgb
from .spec import parse_codec

logger = logging.getLogger(__name__)

__all__ = [
    "PHOTO_EXTENSIONS",
    "PairDataError",
    "PairProblem",
    "PairSet",
    "PhotoError",
    "PlatformPairs",
    "SimulatedPairs",
    "held_out_views",
    "list_photos",
    "load_rgb",
    "paper_view",
    "split_held_out",
    "training_crops",
]

#: Default side of a view: the paper protocol's 224x224 input.
DEFAULT_SIZE = 224
# RandomResizedCrop's aspect-ratio range and number of tries before falling back to the whole photo.
_RATIO = (3 / 4, 4 / 3)
_CROP_TRIES = 10
# Errors a codec may raise on one image (corrupt result, too large, library failure); anything else is a bug.
_CODEC_ERRORS = (ValueError, OSError, Image.DecompressionBombError)


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


def _resize_box(image: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The ``box`` (left, top, right, bottom) of ``image`` resized to size x size with Pillow's bicubic."""
    resized = Image.fromarray(np.ascontiguousarray(image), mode="RGB").resize(
        (size, size), Image.Resampling.BICUBIC, box=box
    )
    return np.array(resized, dtype=np.uint8)


def paper_view(photo: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The paper protocol's view of a photo: the whole photo resized (not cropped) to size x size, bicubic."""
    check_image(photo, "photo")
    _check_positive_int(size, "size")
    return np.array(Image.fromarray(np.ascontiguousarray(photo)).resize((size, size), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------------------------------------------- helpers


def _check_positive_int(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")


def _check_view_options(size: int, views_per_photo: int, scale: tuple[float, float], seed: int) -> tuple[float, float]:
    _check_positive_int(size, "size")
    _check_positive_int(views_per_photo, "views_per_photo")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    try:
        low, high = (float(s) for s in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a pair (low, high) of area fractions, got {scale!r}") from None
    if not (0 < low <= high <= 1):
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale!r}")
    return low, high


def _as_codec(codec: Codec | str) -> Codec:
    if isinstance(codec, str):
        return parse_codec(codec)
    if not isinstance(codec, Codec):
        raise TypeError(f"codec must be a Codec or a spec string, got {type(codec).__name__}")
    return codec


def _random_box(
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


def _scale_box(
    box: tuple[float, float, float, float], source: tuple[int, int], target: tuple[int, int]
) -> tuple[float, float, float, float]:
    """``box`` in an image of (height, width) ``source`` mapped proportionally onto one of size ``target``."""
    sy, sx = target[0] / source[0], target[1] / source[1]
    left, top, right, bottom = box
    return left * sx, top * sy, right * sx, bottom * sy


def _photo_rngs(seed: int, count: int) -> list[np.random.Generator]:
    """One generator per photo, all from ``seed``: a photo's views do not depend on whether others decoded."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(count)]


class _PairBuffer:
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


def _problem(problems: list[PairProblem], path: Path, reason: str) -> None:
    logger.info("skipping %s: %s", path, reason)
    problems.append(PairProblem(path, reason))


def _decode(path: Path, problems: list[PairProblem]) -> np.ndarray | None:
    try:
        return load_rgb(path)
    except PhotoError as error:
        _problem(problems, path, error.reason)
        return None


def _apply_codec(codec: Codec, image: np.ndarray) -> np.ndarray:
    """``codec.apply(image)``, checking that the codec returned an RGB image (of the same size when it says so)."""
    result = codec.apply(image)
    check_image(result, f"{codec.spec} output")
    if codec.preserves_size and result.shape != image.shape:
        raise ValueError(f"{codec.spec} claims to preserve size but returned {result.shape} for {image.shape}")
    return result


# ---------------------------------------------------------------------------------------------------- simulated


class SimulatedPairs:
    """Pairs made by running a real codec on random views of photos.

    Each view is a RandomResizedCrop of the photo (area fraction uniform in ``scale``, aspect ratio log-uniform in
    [3/4, 4/3], the whole photo after 10 misses) resized to size x size with Pillow's bicubic, mirrored with
    probability 0.5 when ``flip``. The flip is part of the *original* view, so the compressed view is always the
    codec's output for exactly that view.

    Where the codec runs:

    * ``codec.preserves_size`` (a pure codec: ``jpeg:50``, ``webp:75``, ``jp2:10``): on the view itself, at the
      attack resolution, as the paper protocol does. The codec's block grid (JPEG 8x8 blocks and 16x16 MCUs, VP8
      16x16 macroblocks) starts at the view's top-left pixel, and ``compressed[i] == codec.apply(originals[i])``.
    * otherwise (a chain that resizes, ``resize:2048+jpeg:85``): once on the full-resolution photo (and once on
      its mirror image, if some view is flipped); the same crop box, scaled proportionally to the codec's output
      size, is taken from the photo and from the codec's output, and both are resized to size x size. The pair
      is the compression as the attack resolution sees it.

    ``numpy.random.SeedSequence(seed)`` gives each photo (by position in ``photos``) its own generator, so equal
    inputs and seed give identical arrays, and a photo's views do not depend on whether other photos decoded.
    """

    def __init__(
        self,
        photos: Sequence[str | os.PathLike],
        codec: Codec | str,
        size: int = DEFAULT_SIZE,
        views_per_photo: int = 16,
        scale: tuple[float, float] = (0.3, 1.0),
        flip: bool = True,
        seed: int = 0,
    ) -> None:
        self.photos = [Path(p) for p in photos]
        self.codec = _as_codec(codec)
        self.scale = _check_view_options(size, views_per_photo, scale, seed)
        self.size = size
        self.views_per_photo = views_per_photo
        self.flip = bool(flip)
        self.seed = seed

    def build(self) -> PairSet:
        """All views of all photos; raises PairDataError when no photo gives a pair.

        Undecodable photos and codec failures on a photo become PairProblems (the photo's views are dropped).
        CodecUnavailableError (e.g. no AVIF in this Pillow) is raised, since no photo could succeed.
        """
        if not self.photos:
            raise PairDataError(f"no photos given to make {self.codec.spec} pairs from")
        buffer = _PairBuffer(len(self.photos) * self.views_per_photo, self.size)
        problems: list[PairProblem] = []
        for path, rng in zip(self.photos, _photo_rngs(self.seed, len(self.photos))):
            photo = _decode(path, problems)
            if photo is None:
                continue
            try:
                originals, compressed = self._views(photo, rng)
            except CodecUnavailableError:
                raise
            except _CODEC_ERRORS as error:
                _problem(problems, path, f"codec {self.codec.spec} failed ({error})")
                continue
            buffer.add(path.name, originals, compressed)
        return buffer.finish(problems, f"{len(self.photos)} photos through {self.codec.spec}")

    def _views(self, photo: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        height, width = photo.shape[:2]
        originals: list[np.ndarray] = []
        compressed: list[np.ndarray] = []
        # Full-resolution codec outputs, by flip, for codecs that change size (computed at most once each).
        full: dict[bool, tuple[np.ndarray, np.ndarray]] = {}
        for _ in range(self.views_per_photo):
            box = _random_box(rng, height, width, self.scale)
            flipped = self.flip and bool(rng.random() < 0.5)
            if self.codec.preserves_size:
                view = _resize_box(photo, box, self.size)
                if flipped:
                    view = np.ascontiguousarray(view[:, ::-1])
                originals.append(view)
                compressed.append(_apply_codec(self.codec, view))
                continue
            if flipped not in full:
                source = np.ascontiguousarray(photo[:, ::-1]) if flipped else photo
                full[flipped] = (source, _apply_codec(self.codec, source))
            source, output = full[flipped]
            originals.append(_resize_box(source, box, self.size))
            compressed.append(_resize_box(output, _scale_box(box, source.shape[:2], output.shape[:2]), self.size))
        return originals, compressed


def held_out_views(photos: Sequence[str | os.PathLike], codec: Codec | str, size: int = DEFAULT_SIZE) -> PairSet:
    """One pair per photo, as the paper protocol evaluates: the whole photo resized to size x size.

    A pure codec (``preserves_size``) is applied to that view; a codec that changes size is applied to the
    full-resolution photo and its output resized to size x size. Undecodable photos and codec failures become
    PairProblems; raises PairDataError when no pair results.
    """
    codec = _as_codec(codec)
    _check_positive_int(size, "size")
    paths = [Path(p) for p in photos]
    if not paths:
        raise PairDataError(f"no photos given to make held-out {codec.spec} pairs from")
    buffer = _PairBuffer(len(paths), size)
    problems: list[PairProblem] = []
    for path in paths:
        photo = _decode(path, problems)
        if photo is None:
            continue
        view = paper_view(photo, size)
        try:
            squeezed = (
                _apply_codec(codec, view) if codec.preserves_size else paper_view(_apply_codec(codec, photo), size)
            )
        except CodecUnavailableError:
            raise
        except _CODEC_ERRORS as error:
            _problem(problems, path, f"codec {codec.spec} failed ({error})")
            continue
        buffer.add(path.name, [view], [squeezed])
    return buffer.finish(problems, f"{len(paths)} held-out photos through {codec.spec}")


# ---------------------------------------------------------------------------------------------------- platform


class PlatformPairs:
    """Pairs from a platform: originals in ``original_dir``, the copies it served back in ``compressed_dir``.

    Files pair up by stem (case-sensitive), since platforms change extensions (``a.png`` comes back as ``a.jpg``).
    A stem shared by several files in one folder, a file with no partner, an undecodable file, or a pair whose
    aspect ratios differ by more than ``max_aspect_change`` (relative; probably cropped or rotated) is a
    PairProblem. The aspect check forgives differences that rounding the platform's size to whole pixels explains.

    Platforms resize: views take the same proportional crop box from each photo and resize both to size x size,
    so a platform's downscale is absorbed and ComModel learns the compression as seen at the attack resolution.
    Views use the same RandomResizedCrop scheme as :class:`SimulatedPairs`; a flip mirrors both views alike (the
    platform's compression is fixed, so it cannot come before the flip here).

    ``include`` (original path -> bool) keeps a subset of the matched pairs, e.g. the training or held-out half of
    :func:`split_held_out`.
    """

    def __init__(
        self,
        original_dir: str | os.PathLike,
        compressed_dir: str | os.PathLike,
        size: int = DEFAULT_SIZE,
        views_per_photo: int = 16,
        scale: tuple[float, float] = (0.3, 1.0),
        flip: bool = True,
        seed: int = 0,
        max_aspect_change: float = 0.02,
        include: Callable[[Path], bool] | None = None,
    ) -> None:
        self.original_dir = Path(original_dir)
        self.include = include
        self.compressed_dir = Path(compressed_dir)
        self.scale = _check_view_options(size, views_per_photo, scale, seed)
        if not (isinstance(max_aspect_change, (int, float)) and 0 <= max_aspect_change < math.inf):
            raise ValueError(f"max_aspect_change must be a finite number >= 0, got {max_aspect_change!r}")
        self.size = size
        self.views_per_photo = views_per_photo
        self.flip = bool(flip)
        self.seed = seed
        self.max_aspect_change = float(max_aspect_change)

    def _what(self) -> str:
        return f"{str(self.original_dir)!r} and {str(self.compressed_dir)!r}"

    def match(self) -> tuple[list[tuple[Path, Path]], list[PairProblem]]:
        """(original, compressed) paths paired by stem, sorted by original name, and the files left unpaired.

        Raises PairDataError when a folder is missing or the originals folder holds no photos.
        """
        originals = list_photos(self.original_dir)
        compressed = list_photos(self.compressed_dir)
        if not originals:
            raise PairDataError(
                f"no photos ({', '.join(sorted(PHOTO_EXTENSIONS))}) in original folder {str(self.original_dir)!r}"
            )
        problems: list[PairProblem] = []
        by_stem: list[dict[str, Path]] = []
        ambiguous: set[str] = set()
        for paths, folder in ((originals, "original"), (compressed, "compressed")):
            groups: dict[str, list[Path]] = {}
            for path in paths:
                groups.setdefault(path.stem, []).append(path)
            for stem, group in groups.items():
                if len(group) > 1:
                    names = ", ".join(p.name for p in group)
                    _problem(
                        problems,
                        group[0],
                        f"ambiguous: {len(group)} files in the {folder} folder share the stem {stem!r} ({names})",
                    )
                    ambiguous.add(stem)
            by_stem.append({stem: group[0] for stem, group in groups.items() if len(group) == 1})
        original_by_stem, compressed_by_stem = by_stem
        pairs: list[tuple[Path, Path]] = []
        for stem, path in original_by_stem.items():
            if stem in ambiguous:
                continue
            partner = compressed_by_stem.get(stem)
            if partner is None:
                _problem(problems, path, f"no compressed partner with stem {stem!r} in {str(self.compressed_dir)!r}")
            else:
                pairs.append((path, partner))
        for stem, path in compressed_by_stem.items():
            if stem not in ambiguous and stem not in original_by_stem:
                _problem(problems, path, f"no original partner with stem {stem!r} in {str(self.original_dir)!r}")
        pairs.sort(key=lambda pair: pair[0].name)
        if self.include is not None:
            pairs = [pair for pair in pairs if self.include(pair[0])]
        return pairs, problems

    def _decode_pair(
        self, original_path: Path, compressed_path: Path, problems: list[PairProblem]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Both photos of a pair, or None (with a PairProblem) when either is unusable."""
        original = _decode(original_path, problems)
        compressed = _decode(compressed_path, problems)
        if original is None or compressed is None:
            return None
        (oh, ow), (ch, cw) = original.shape[:2], compressed.shape[:2]
        change = abs((cw / ch) / (ow / oh) - 1)
        # A platform scaling by s rounds each side to whole pixels: accept when either side's scale explains both.
        rounding = any(abs(oh * s - ch) <= 1 and abs(ow * s - cw) <= 1 for s in (ch / oh, cw / ow))
        if change > self.max_aspect_change and not rounding:
            _problem(
                problems,
                compressed_path,
                f"size mismatch beyond repair: {ow}x{oh} original {original_path.name} vs {cw}x{ch} "
                f"(aspect ratio changed {change:.1%} > {self.max_aspect_change:.1%}; cropped or rotated?)",
            )
            return None
        return original, compressed

    def build(self) -> PairSet:
        """``views_per_photo`` random views of every usable pair; raises PairDataError when none is usable."""
        pairs, problems = self.match()
        if not pairs:
            first = f"; first problem: {problems[0]}" if problems else ""
            raise PairDataError(f"no file stems in common between {self._what()}{first}")
        buffer = _PairBuffer(len(pairs) * self.views_per_photo, self.size)
        for (original_path, compressed_path), rng in zip(pairs, _photo_rngs(self.seed, len(pairs))):
            decoded = self._decode_pair(original_path, compressed_path, problems)
            if decoded is None:
                continue
            original, compressed = decoded
            originals: list[np.ndarray] = []
            squeezed: list[np.ndarray] = []
            for _ in range(self.views_per_photo):
                box = _random_box(rng, original.shape[0], original.shape[1], self.scale)
                flipped = self.flip and bool(rng.random() < 0.5)
                views = (
                    _resize_box(original, box, self.size),
                    _resize_box(compressed, _scale_box(box, original.shape[:2], compressed.shape[:2]), self.size),
                )
                if flipped:
                    views = tuple(np.ascontiguousarray(v[:, ::-1]) for v in views)
                originals.append(views[0])
                squeezed.append(views[1])
            buffer.add(original_path.name, originals, squeezed)
        return buffer.finish(problems, f"platform pairs in {self._what()}")

    def paper_views(self) -> PairSet:
        """One pair per usable match: both whole photos resized to size x size (the paper protocol's view)."""
        pairs, problems = self.match()
        if not pairs:
            first = f"; first problem: {problems[0]}" if problems else ""
            raise PairDataError(f"no file stems in common between {self._what()}{first}")
        buffer = _PairBuffer(len(pairs), self.size)
        for original_path, compressed_path in pairs:
            decoded = self._decode_pair(original_path, compressed_path, problems)
            if decoded is not None:
                buffer.add(original_path.name, [paper_view(decoded[0], self.size)], [paper_view(decoded[1], self.size)])
        return buffer.finish(problems, f"platform pairs in {self._what()}")


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
    _check_positive_int(batch, "batch")
    _check_positive_int(crop, "crop")
    _check_positive_int(align, "align")
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
