"""Photo files, torch-free, for the whole project: reading photos into upright uint8 RGB arrays (one loader, one
extension list, one error type, for the cloak pipeline, the evaluation and ComModel training pairs alike),
collecting them from folders, and writing cloaked ones back in the same format family, atomically.

Every untrusted file is decoded in a worker process under a per-file budget (:mod:`comcloak.codecs.decode_worker`,
running :mod:`comcloak.codecs.decoding`): Pillow's warnings become the photo's notes, and a file that crashes the
decoder or runs past its time or memory fails alone. Pillow's decompression-bomb guard stays on: an oversized image
is a :class:`PhotoError`, never decoded.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from comcloak import defaults
from comcloak.atomic import atomic_writer
from comcloak.codecs.decode_worker import ISOLATED, DecodeBudget, DecodeFailure, decode_in_worker
from comcloak.codecs.metadata import DEFAULT_METADATA, METADATA_POLICIES, output_exif, output_xmp
from comcloak.codecs.pixel_formats import icc_colour_space
from comcloak.errors import UserError

logger = logging.getLogger(__name__)

# Extensions collected when a folder is given; single files of other types are still tried.
PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif",
                              ".heic", ".heif"})
HEIF_SUFFIXES = frozenset({".heic", ".heif"})  # read through pillow-heif: pip install 'comcloak[heif]'

# Lossy outputs are written at high quality with full-resolution chroma so the cloak is not smoothed away.
DEFAULT_JPEG_QUALITY = defaults.JPEG_QUALITY
DEFAULT_WEBP_QUALITY = defaults.WEBP_QUALITY
# Formats written back as they came; anything else (GIF, ...) becomes PNG, since a palette would destroy the cloak.
WRITTEN_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF", "BMP"})
_GREY_FORMATS = frozenset({"JPEG", "PNG", "TIFF", "BMP"})  # WebP has no greyscale mode: written as RGB
_ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
_METADATA_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF"})


class PhotoError(UserError, ValueError):
    """A photo could not be read or used (missing, not an image, corrupt, too large, too small); one line.

    ``path`` is the file, ``reason`` the explanation without it; the message is ``"PATH: REASON"``.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass
class Photo:
    """A decoded photo: ``pixels`` uint8 RGB (H, W, 3), upright (EXIF orientation applied), by the rules of
    :mod:`comcloak.codecs.pixel_formats`; ``icc_profile`` is valid for the output's mode; ``greyscale`` photos are
    written back greyscale; ``notes`` say what the decoding did to the samples (16-bit scaled, CMYK converted, ...)."""

    pixels: np.ndarray
    format: str
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    source: Path | None = None
    greyscale: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    exif: Image.Exif | None = None  # as read, orientation 1 (the pixels are upright); --metadata decides the rest
    xmp: bytes | None = None


@dataclass(frozen=True)
class PhotoHeader:
    """What a photo's header says, without decoding its pixels: the upright size and the file format."""

    height: int
    width: int
    format: str
    alpha: bool = False  # an alpha channel or a transparent colour: the output needs a format that keeps it


def read_header(path: str | os.PathLike, data: bytes | None = None, budget: DecodeBudget | None = None) -> PhotoHeader:
    """The upright size and format of ``path`` (or, given ``data``, of those bytes) from its header, no pixels
    decoded (cheap on any size), in a decoding worker under ``budget``; the same one-line :class:`PhotoError` as
    :func:`load_photo`."""
    return _decoded_in_worker("header", Path(path), data, budget)


def load_photo(path: str | os.PathLike, data: bytes | None = None, budget: DecodeBudget | None = None) -> Photo:
    """Decode ``path`` (or, given ``data``, those bytes, named ``path`` in errors: an upload) to upright RGB, in a
    separate decoding process under the per-file ``budget`` (:mod:`comcloak.codecs.decode_worker`): a file that
    crashes the decoder, or runs past its time or memory, fails alone. Raises :class:`PhotoError` with a one-line
    reason; Pillow's warnings about the file are in the photo's ``notes``."""
    return _decoded_in_worker("photo", Path(path), data, budget)


def _decoded_in_worker(kind: str, path: Path, data: bytes | None, budget: DecodeBudget | None) -> Any:
    if not ISOLATED:  # no bounds here (see decode_worker); decoding imports this module, hence imported late
        from comcloak.codecs.decoding import decode_header, decode_photo

        return decode_header(path, data) if kind == "header" else decode_photo(path, data)
    try:  # the limit travels with each request: the worker obeys this process's setting
        return decode_in_worker((kind, str(path), data, Image.MAX_IMAGE_PIXELS), budget)
    except DecodeFailure as failure:
        raise PhotoError(path, str(failure)) from None


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """The upright uint8 RGB pixels (H, W, 3) of ``path``, alpha dropped: :func:`load_photo`'s ``pixels``."""
    return load_photo(path).pixels


@dataclass(frozen=True)
class WriteOptions:
    """How cloaks are encoded: JPEG quality (4:4:4 chroma) and the ``--metadata`` policy."""

    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    metadata: str = DEFAULT_METADATA

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise UserError(f"--jpeg-quality must be in 1..100, got {self.jpeg_quality}")
        if self.metadata not in METADATA_POLICIES:
            raise UserError(f"--metadata takes {', '.join(METADATA_POLICIES)}, got {self.metadata!r}")


DEFAULT_WRITE = WriteOptions()


def save_photo(
    photo: Photo, pixels: np.ndarray, destination: str | os.PathLike, options: WriteOptions = DEFAULT_WRITE,
    image_format: str | None = None,
) -> Path:
    """Write ``pixels`` (uint8 RGB) to ``destination`` via a temp file and rename, encoded by :func:`encode_photo`.
    A crash or a full disk leaves either the old file or none, never a half-written one."""
    data = encode_photo(photo, pixels, options, image_format)
    with atomic_writer(destination) as handle:
        handle.write(data)
    return Path(destination)


def encode_photo(photo: Photo, pixels: np.ndarray, options: WriteOptions = DEFAULT_WRITE,
                 image_format: str | None = None) -> bytes:
    """The bytes of ``pixels`` (uint8 RGB) encoded in ``image_format`` (a Pillow format name), by default ``photo``'s
    format family (:func:`output_format`).

    A greyscale photo is written greyscale (the cloak's luminance) where the format has greyscale; alpha is kept where
    the format has it; the colour profile is attached only when it is valid for the mode written; EXIF and XMP follow
    ``options.metadata`` (:mod:`comcloak.codecs.metadata`; BMP carries none).
    """
    image_format = image_format or output_format(photo.format, photo.alpha is not None)
    image = Image.fromarray(pixels, "RGB")
    if photo.greyscale and image_format in _GREY_FORMATS:  # ITU-R 601 luma of the cloak
        image = image.convert("L")
    if photo.alpha is not None and image_format in _ALPHA_FORMATS:
        image.putalpha(Image.fromarray(photo.alpha, "L"))
    encoder: dict = {}
    wanted_space = "GRAY" if image.mode in ("L", "LA") else "RGB"
    if photo.icc_profile and icc_colour_space(photo.icc_profile) == wanted_space:
        encoder["icc_profile"] = photo.icc_profile
    if image_format in _METADATA_FORMATS:
        exif, xmp = output_exif(photo.exif, options.metadata), output_xmp(photo.xmp, options.metadata)
        if exif is not None:
            encoder["exif"] = exif.tobytes()
        if xmp is not None:
            encoder["xmp"] = xmp
    if image_format == "JPEG":
        encoder.update(quality=options.jpeg_quality, subsampling=0)  # 4:4:4
    elif image_format == "WEBP":
        # exact: keep the colour under transparent pixels, which libwebp otherwise replaces (the photo is the input's
        # pixels plus the cloak, everywhere; un-hiding them by alpha must show the same picture)
        encoder.update(quality=DEFAULT_WEBP_QUALITY, exact=image.mode == "RGBA")
    elif image_format == "TIFF" and not _has_sub_ifds(encoder.get("exif")):
        encoder["compression"] = "tiff_deflate"  # libtiff; it cannot write EXIF sub-IFDs, Pillow's own writer can
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **encoder)
    return buffer.getvalue()


def _has_sub_ifds(exif_bytes: bytes | None) -> bool:
    if not exif_bytes:
        return False
    exif = Image.Exif()
    exif.load(exif_bytes)
    return any(tag in exif for tag in (0x8769, 0x8825, 0xA005))  # Exif, GPS and Interop IFD pointers


def output_format(photo_format: str, alpha: bool = False) -> str:
    """The Pillow format a photo is written back in: its own when it is one of the writable ones (and, for a photo
    with ``alpha``, keeps alpha: Pillow reads a BMP's alpha back as nothing), else PNG."""
    if photo_format not in WRITTEN_FORMATS or (alpha and photo_format not in _ALPHA_FORMATS):
        return "PNG"
    return photo_format


@dataclass(frozen=True)
class SkippedInput:
    """A file or folder met while collecting inputs that is not cloaked, and why (one line)."""

    path: Path
    reason: str


@dataclass
class CollectedInputs:
    """What :func:`collect_inputs` found: ``pairs`` ``(photo_path, relative_output_path)``, sorted by relative path,
    everything ``skipped`` with its reason, and the symlinks it met (files, dangling ones, folders it followed), which
    must not lead to the output folder (:func:`comcloak.engine.outputs.refuse_links_to_output`)."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[SkippedInput] = field(default_factory=list)
    links: list[Path] = field(default_factory=list)


def collect_inputs(inputs: list[str | os.PathLike], follow_symlinks: bool = False) -> CollectedInputs:
    """Expand files and folders into photos to cloak, and say what was skipped and why: files that are not photos
    (by extension), dangling symlinks, symlinked folders (followed only with ``follow_symlinks``, loops detected) and
    second paths to a photo already found (a symlink to it; the real path is kept, else the first in sorted order).

    Files named directly keep their name and are tried whatever their extension; photos found in a folder keep their
    path relative to that folder. Raises :class:`PhotoError` naming the first input that does not exist.
    """
    collected = CollectedInputs()
    candidates: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_symlink():
            collected.links.append(path)
        if path.is_dir():
            candidates += _walk(path, follow_symlinks, collected)
        elif path.is_file():
            candidates.append((path, Path(path.name)))
        elif path.is_symlink():
            raise PhotoError(path, "dangling symlink")
        else:
            raise PhotoError(path, "input not found")
    by_target: dict[Path, list[tuple[Path, Path]]] = {}
    for source, relative in candidates:
        by_target.setdefault(source.resolve(), []).append((source, relative))
    for target, claims in by_target.items():
        claims.sort(key=lambda claim: (claim[0].is_symlink(), str(claim[1])))
        kept_source, kept_relative = claims[0]
        collected.pairs.append((target, kept_relative))
        for source, _ in claims[1:]:
            collected.skipped.append(SkippedInput(source, f"the same photo as {kept_source} (through a symlink)"))
    collected.pairs.sort(key=lambda pair: str(pair[1]))
    collected.skipped.sort(key=lambda skipped: str(skipped.path))
    return collected


def _walk(top: Path, follow_symlinks: bool, collected: CollectedInputs) -> list[tuple[Path, Path]]:
    """The photo files under ``top`` with their paths relative to it; what is passed over goes to ``skipped``, the
    symlinks met to ``links``."""
    skipped = collected.skipped
    found: list[tuple[Path, Path]] = []
    visited = {top.resolve()}
    for folder, subfolders, files in os.walk(top, followlinks=follow_symlinks):
        here = Path(folder)
        for name in sorted(subfolders):
            child = here / name
            if not child.is_symlink():
                continue
            if not follow_symlinks:
                skipped.append(SkippedInput(child, "symlinked folder not followed (use --follow-symlinks)"))
            else:
                target, parent = child.resolve(), here.resolve()
                if target in visited or target == parent or target in parent.parents:
                    skipped.append(SkippedInput(child, f"symlinked folder loops back to {target}"))
                    subfolders.remove(name)
                else:
                    collected.links.append(child)
                visited.add(target)
        for name in sorted(files):
            candidate = here / name
            if candidate.is_symlink():
                collected.links.append(candidate)
            if candidate.is_symlink() and not candidate.exists():
                skipped.append(SkippedInput(candidate, "dangling symlink"))
            elif candidate.suffix.lower() not in PHOTO_EXTENSIONS:
                skipped.append(SkippedInput(candidate, f"not a photo ({candidate.suffix or 'no extension'})"))
            elif candidate.is_file():
                found.append((candidate, candidate.relative_to(top)))
            else:
                skipped.append(SkippedInput(candidate, "not a regular file"))
    return found


def collect_photos(inputs: list[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """The ``(photo_path, relative_output_path)`` pairs of :func:`collect_inputs`, without the skip list (evaluation
    and training, which read photos and write nothing beside them)."""
    return collect_inputs(inputs).pairs
