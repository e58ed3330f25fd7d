"""Photo files, torch-free, for the whole project: reading photos into upright uint8 RGB arrays (one loader, one
extension list, one error type, for the cloak pipeline, the evaluation and ComModel training pairs alike),
collecting them from folders, and writing cloaked ones back in the same format family, atomically.

Pillow's decompression-bomb guard stays on: an oversized image is a :class:`PhotoError`, never decoded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from comcloak import defaults
from comcloak.atomic import atomic_writer
from comcloak.errors import UserError

logger = logging.getLogger(__name__)

# Extensions collected when a folder is given; single files of other types are still tried.
PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})
# Lossy outputs are written at high quality with full-resolution chroma so the cloak is not smoothed away.
DEFAULT_JPEG_QUALITY = defaults.JPEG_QUALITY
DEFAULT_WEBP_QUALITY = defaults.WEBP_QUALITY
# Formats written back as they came; anything else (GIF, ...) becomes PNG, since a palette would destroy the cloak.
_SAVE_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}


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
    """A decoded photo: ``pixels`` uint8 RGB (H, W, 3), upright (EXIF orientation applied)."""

    pixels: np.ndarray
    format: str
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    source: Path | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PhotoHeader:
    """What a photo's header says, without decoding its pixels: the upright size and the file format."""

    height: int
    width: int
    format: str


# EXIF orientations that rotate by 90 or 270 degrees (ImageOps.exif_transpose swaps width and height for them).
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112


def read_header(path: str | os.PathLike) -> PhotoHeader:
    """The upright size and format of ``path`` from its header (no pixels are decoded; cheap on any size), with the
    same one-line :class:`PhotoError` as :func:`load_photo`."""
    path = Path(path)
    with _decoding_errors(path), Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        return PhotoHeader(height, width, image.format or "PNG")


@contextmanager
def _decoding_errors(path: Path) -> Iterator[None]:
    """Turn what Pillow raises on a bad file into a one-line :class:`PhotoError`."""
    try:
        yield
    except FileNotFoundError:
        raise PhotoError(path, "no such file") from None
    except IsADirectoryError:
        raise PhotoError(path, "is a folder, not a photo") from None
    except PermissionError:
        raise PhotoError(path, "permission denied") from None
    except UnidentifiedImageError:
        raise PhotoError(path, "not a readable image") from None
    except Image.DecompressionBombError as error:
        raise PhotoError(path, f"refused as a possible decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data surfaces as these
        raise PhotoError(path, f"corrupt image ({error})") from None


def load_photo(path: str | os.PathLike) -> Photo:
    """Decode ``path`` to upright RGB; raise :class:`PhotoError` with a one-line reason on failure."""
    path = Path(path)
    with _decoding_errors(path), Image.open(path) as image:
        image_format = image.format or "PNG"
        icc_profile = image.info.get("icc_profile")
        image = ImageOps.exif_transpose(image)
        alpha = None
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            alpha = np.asarray(rgba)[..., 3].copy()
            image = rgba
        pixels = np.asarray(image.convert("RGB")).copy()
    if pixels.ndim != 3 or min(pixels.shape[:2]) < 1:
        raise PhotoError(path, "empty image")
    return Photo(pixels=pixels, format=image_format, alpha=alpha, icc_profile=icc_profile, source=path)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """The upright uint8 RGB pixels (H, W, 3) of ``path``, alpha dropped: :func:`load_photo`'s ``pixels``."""
    return load_photo(path).pixels


def output_suffix(photo_format: str, source_suffix: str) -> str:
    """Suffix of the cloaked file: the source's own when its format is written back, else ``.png``."""
    if photo_format in _SAVE_FORMATS:
        return source_suffix if source_suffix.lower() in PHOTO_EXTENSIONS else _SAVE_FORMATS[photo_format]
    return ".png"


def save_photo(
    photo: Photo, pixels: np.ndarray, destination: str | os.PathLike, jpeg_quality: int = DEFAULT_JPEG_QUALITY
) -> Path:
    """Write ``pixels`` (uint8 RGB) in ``photo``'s format family to ``destination`` via a temp file and rename.

    A crash or a full disk leaves either the old file or none, never a half-written one.
    """
    destination = Path(destination)
    image_format = photo.format if photo.format in _SAVE_FORMATS else "PNG"
    image = Image.fromarray(pixels, "RGB")
    if photo.alpha is not None and image_format in ("PNG", "WEBP", "TIFF"):
        image.putalpha(Image.fromarray(photo.alpha, "L"))
    options: dict = {}
    if photo.icc_profile:
        options["icc_profile"] = photo.icc_profile
    if image_format == "JPEG":
        options.update(quality=jpeg_quality, subsampling=0)  # 4:4:4
    elif image_format == "WEBP":
        options.update(quality=DEFAULT_WEBP_QUALITY)
    elif image_format == "TIFF":
        options["compression"] = "tiff_deflate"
    with atomic_writer(destination) as handle:
        image.save(handle, format=image_format, **options)
    return destination


def collect_photos(inputs: list[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Expand files and folders into ``(photo_path, relative_output_path)`` pairs, sorted, without duplicates.

    Files named directly keep their name; photos found in a folder keep their path relative to that folder.
    Raises :class:`PhotoError` naming the first input that does not exist.
    """
    found: dict[Path, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for candidate in sorted(path.rglob("*")):
                if candidate.is_file() and candidate.suffix.lower() in PHOTO_EXTENSIONS:
                    found.setdefault(candidate.resolve(), candidate.relative_to(path))
        elif path.is_file():
            found.setdefault(path.resolve(), Path(path.name))
        else:
            raise PhotoError(path, "input not found")
    return sorted(found.items(), key=lambda pair: str(pair[1]))
