"""Training pairs for ComModel, the CNN that imitates a compressor (ComReAdv): (original view, compressed view).

Both views of a pair are HxWx3 uint8 at the resolution the attack sees (224x224 by default). Two sources:

* :class:`SimulatedPairs`: a folder of photos and a real :class:`~comcloak.codecs.base.Codec` (``jpeg:50``,
  ``resize:2048+jpeg:85``); the codec is run on every view, so the pairs are exact.
* :class:`PlatformPairs`: originals and the copies a platform served back, matched by file stem.

Bad photos and pairs never stop a build: each becomes a :class:`PairProblem` in :attr:`PairSet.problems`. Only a
request that cannot produce anything (a missing folder, no usable photo at all) raises :class:`PairDataError`.

The pair set, :class:`ViewSettings` (how views are cut), reading photos and the training crops are in
:mod:`comcloak.codecs.pair_set`, re-exported here. A :class:`PairSet` holds every view in memory.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .base import Codec, CodecUnavailableError, check_image
from .pair_set import (
    DEFAULT_SIZE,
    PairBuffer,
    PairDataError,
    PairProblem,
    PairSet,
    ViewSettings,
    check_positive_int,
    decode_or_note,
    list_photos,
    note_problem,
    paper_view,
    photo_rngs,
    random_box,
    resize_box,
    scale_box,
    split_held_out,
    training_crops,
)
from .photos import PHOTO_EXTENSIONS, PhotoError, load_rgb
from .spec import parse_codec

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SIZE",
    "PHOTO_EXTENSIONS",
    "PairDataError",
    "PairProblem",
    "PairSet",
    "PhotoError",
    "PlatformPairs",
    "SimulatedPairs",
    "ViewSettings",
    "held_out_views",
    "list_photos",
    "load_rgb",
    "paper_view",
    "split_held_out",
    "training_crops",
]

# Errors a codec may raise on one image (corrupt result, too large, library failure); anything else is a bug.
_CODEC_ERRORS = (ValueError, OSError, Image.DecompressionBombError)


def _as_codec(codec: Codec | str) -> Codec:
    if isinstance(codec, str):
        return parse_codec(codec)
    if not isinstance(codec, Codec):
        raise TypeError(f"codec must be a Codec or a spec string, got {type(codec).__name__}")
    return codec



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

    ``views`` (:class:`ViewSettings`) says how views are cut: each is a RandomResizedCrop of the photo (area fraction
    uniform in ``views.scale``, aspect ratio log-uniform in [3/4, 4/3], the whole photo after 10 misses) resized to
    size x size with Pillow's bicubic, mirrored with probability 0.5 when ``views.flip``. The flip is part of the
    *original* view, so the compressed view is always the codec's output for exactly that view.

    Where the codec runs:

    * ``codec.preserves_size`` (a pure codec: ``jpeg:50``, ``webp:75``, ``jp2:10``): on the view itself, at the
      attack resolution, as the paper protocol does. The codec's block grid (JPEG 8x8 blocks and 16x16 MCUs, VP8
      16x16 macroblocks) starts at the view's top-left pixel, and ``compressed[i] == codec.apply(originals[i])``.
    * otherwise (a chain that resizes, ``resize:2048+jpeg:85``): once on the full-resolution photo (and once on
      its mirror image, if some view is flipped); the same crop box, scaled proportionally to the codec's output
      size, is taken from the photo and from the codec's output, and both are resized to size x size. The pair
      is the compression as the attack resolution sees it.

    ``numpy.random.SeedSequence(views.seed)`` gives each photo (by position in ``photos``) its own generator, so equal
    inputs and seed give identical arrays, and a photo's views do not depend on whether other photos decoded.
    """

    def __init__(
        self,
        photos: Sequence[str | os.PathLike],
        codec: Codec | str,
        views: ViewSettings | None = None,
    ) -> None:
        self.photos = [Path(p) for p in photos]
        self.codec = _as_codec(codec)
        self.views = views or ViewSettings()

    def build(self) -> PairSet:
        """All views of all photos; raises PairDataError when no photo gives a pair.

        Undecodable photos and codec failures on a photo become PairProblems (the photo's views are dropped).
        CodecUnavailableError (e.g. no AVIF in this Pillow) is raised, since no photo could succeed.
        """
        if not self.photos:
            raise PairDataError(f"no photos given to make {self.codec.spec} pairs from")
        buffer = PairBuffer(len(self.photos) * self.views.views_per_photo, self.views.size)
        problems: list[PairProblem] = []
        for path, rng in zip(self.photos, photo_rngs(self.views.seed, len(self.photos))):
            photo = decode_or_note(path, problems)
            if photo is None:
                continue
            try:
                originals, compressed = self._views(photo, rng)
            except CodecUnavailableError:
                raise
            except _CODEC_ERRORS as error:
                note_problem(problems, path, f"codec {self.codec.spec} failed ({error})")
                continue
            buffer.add(path.name, originals, compressed)
        return buffer.finish(problems, f"{len(self.photos)} photos through {self.codec.spec}")

    def _views(self, photo: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        height, width = photo.shape[:2]
        originals: list[np.ndarray] = []
        compressed: list[np.ndarray] = []
        # Full-resolution codec outputs, by flip, for codecs that change size (computed at most once each).
        full: dict[bool, tuple[np.ndarray, np.ndarray]] = {}
        for _ in range(self.views.views_per_photo):
            box = random_box(rng, height, width, self.views.scale)
            flipped = self.views.flip and bool(rng.random() < 0.5)
            if self.codec.preserves_size:
                view = resize_box(photo, box, self.views.size)
                if flipped:
                    view = np.ascontiguousarray(view[:, ::-1])
                originals.append(view)
                compressed.append(_apply_codec(self.codec, view))
                continue
            if flipped not in full:
                source = np.ascontiguousarray(photo[:, ::-1]) if flipped else photo
                full[flipped] = (source, _apply_codec(self.codec, source))
            source, output = full[flipped]
            originals.append(resize_box(source, box, self.views.size))
            box_out = scale_box(box, source.shape[:2], output.shape[:2])
            compressed.append(resize_box(output, box_out, self.views.size))
        return originals, compressed


def held_out_views(photos: Sequence[str | os.PathLike], codec: Codec | str, size: int = DEFAULT_SIZE) -> PairSet:
    """One pair per photo, as the paper protocol evaluates: the whole photo resized to size x size.

    A pure codec (``preserves_size``) is applied to that view; a codec that changes size is applied to the
    full-resolution photo and its output resized to size x size. Undecodable photos and codec failures become
    PairProblems; raises PairDataError when no pair results.
    """
    codec = _as_codec(codec)
    check_positive_int(size, "size")
    paths = [Path(p) for p in photos]
    if not paths:
        raise PairDataError(f"no photos given to make held-out {codec.spec} pairs from")
    buffer = PairBuffer(len(paths), size)
    problems: list[PairProblem] = []
    for path in paths:
        photo = decode_or_note(path, problems)
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
            note_problem(problems, path, f"codec {codec.spec} failed ({error})")
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
        views: ViewSettings | None = None,
        max_aspect_change: float = 0.02,
        include: Callable[[Path], bool] | None = None,
    ) -> None:
        self.original_dir = Path(original_dir)
        self.include = include
        self.compressed_dir = Path(compressed_dir)
        if not (isinstance(max_aspect_change, (int, float)) and 0 <= max_aspect_change < math.inf):
            raise ValueError(f"max_aspect_change must be a finite number >= 0, got {max_aspect_change!r}")
        self.views = views or ViewSettings()
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
                    note_problem(
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
                reason = f"no compressed partner with stem {stem!r} in {str(self.compressed_dir)!r}"
                note_problem(problems, path, reason)
            else:
                pairs.append((path, partner))
        for stem, path in compressed_by_stem.items():
            if stem not in ambiguous and stem not in original_by_stem:
                note_problem(problems, path, f"no original partner with stem {stem!r} in {str(self.original_dir)!r}")
        pairs.sort(key=lambda pair: pair[0].name)
        if self.include is not None:
            pairs = [pair for pair in pairs if self.include(pair[0])]
        return pairs, problems

    def _decode_pair(
        self, original_path: Path, compressed_path: Path, problems: list[PairProblem]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Both photos of a pair, or None (with a PairProblem) when either is unusable."""
        original = decode_or_note(original_path, problems)
        compressed = decode_or_note(compressed_path, problems)
        if original is None or compressed is None:
            return None
        (oh, ow), (ch, cw) = original.shape[:2], compressed.shape[:2]
        change = abs((cw / ch) / (ow / oh) - 1)
        # A platform scaling by s rounds each side to whole pixels: accept when either side's scale explains both.
        rounding = any(abs(oh * s - ch) <= 1 and abs(ow * s - cw) <= 1 for s in (ch / oh, cw / ow))
        if change > self.max_aspect_change and not rounding:
            note_problem(
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
        buffer = PairBuffer(len(pairs) * self.views.views_per_photo, self.views.size)
        for (original_path, compressed_path), rng in zip(pairs, photo_rngs(self.views.seed, len(pairs))):
            decoded = self._decode_pair(original_path, compressed_path, problems)
            if decoded is None:
                continue
            original, compressed = decoded
            originals: list[np.ndarray] = []
            squeezed: list[np.ndarray] = []
            for _ in range(self.views.views_per_photo):
                box = random_box(rng, original.shape[0], original.shape[1], self.views.scale)
                flipped = self.views.flip and bool(rng.random() < 0.5)
                views = (
                    resize_box(original, box, self.views.size),
                    resize_box(compressed, scale_box(box, original.shape[:2], compressed.shape[:2]),
                               self.views.size),
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
        buffer = PairBuffer(len(pairs), self.views.size)
        for original_path, compressed_path in pairs:
            decoded = self._decode_pair(original_path, compressed_path, problems)
            if decoded is not None:
                size = self.views.size
                buffer.add(original_path.name, [paper_view(decoded[0], size)], [paper_view(decoded[1], size)])
        return buffer.finish(problems, f"platform pairs in {self._what()}")


