"""Decoding one photo file in this process, as the decoding worker does (:mod:`comcloak.codecs.decode_worker`):
the header, or the pixels brought to upright uint8 RGB by :mod:`comcloak.codecs.pixel_formats`, with a one-line
:class:`~comcloak.codecs.photos.PhotoError` for anything wrong with the file.

- Warnings never change control flow: every warning Pillow raises while one file is decoded is captured (each
  distinct one once) and becomes a note of that photo; none is printed, re-issued or raised, even under ``-W error``.
- Animated and multi-page files are refused, saying which; a multi-picture JPEG (MPO) is its first image, noted.
- A memory budget refuses, before decoding, an image whose decoding would need more (from its size and mode).
- Pillow's decompression-bomb guard stays on: above its error size a file is refused, between its warning and error
  sizes it is decoded with a note.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from comcloak.codecs.metadata import output_exif
from comcloak.codecs.photos import HEIF_SUFFIXES, Photo, PhotoError, PhotoHeader
from comcloak.codecs.pixel_formats import (
    PixelFormatError,
    declared_sample_bits,
    declares_signed_samples,
    has_alpha,
    to_rgb8,
)
from comcloak.errors import first_line

# EXIF orientations that rotate by 90 or 270 degrees (ImageOps.exif_transpose swaps width and height for them).
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112


# The reason a file past Pillow's bomb guard fails with (the server answers it with 413, not 400).
BOMB_REASON = "refused as a possible decompression bomb"


@functools.cache
def heif_support() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with Pillow once, if it is installed (the ``heif`` extra)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def answer_decode_request(kind: str, path: str, data: bytes | None, max_pixels: int | None,
                          memory_bytes: int) -> tuple[str, Any, bool]:
    """A decoding worker's answer to one request: ``("ok", PhotoHeader | Photo, True)``, or ``("error", reason,
    reusable)``. Runs in the worker (:func:`comcloak.codecs.decode_worker.serve`); whatever a file makes Pillow
    raise fails that file, never the worker."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        if kind == "header":
            return "ok", decode_header(path, data), True
        return "ok", decode_photo(path, data, memory_bytes), True
    except PhotoError as error:
        return "error", error.reason, True
    except MemoryError:
        return "error", f"ran out of the per-file memory budget ({_size(memory_bytes)}) decoding it", False
    except Exception as error:  # noqa: BLE001 - Pillow's plugins raise any type on a hostile file
        return "error", f"corrupt image ({type(error).__name__}: {first_line(error)})", True


def decode_header(path: str | os.PathLike, data: bytes | None = None) -> PhotoHeader:
    """:func:`read_header` in this process, without the worker's bounds (what the worker runs)."""
    path = Path(path)
    heif_support()
    source = io.BytesIO(data) if data is not None else path
    with _decoding_errors(path), _captured_warnings(), Image.open(source) as image:
        width, height = image.size
        if _header_orientation(image) in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        return PhotoHeader(height, width, _photo_format(image), has_alpha(image))


def _header_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation a header read can see without decoding: PNG's ``getexif()`` decodes every pixel to look
    for an eXIf chunk after them, so a PNG counts only the one before its pixels (the order the PNG spec asks for)."""
    if image.format == "PNG" and "exif" not in image.info:
        return None
    return image.getexif().get(_EXIF_ORIENTATION)


def decode_photo(path: str | os.PathLike, data: bytes | None = None, memory_bytes: int | None = None) -> Photo:
    """:func:`load_photo` in this process, without the worker's bounds: what the worker runs, and how our own
    encoded outputs are read back. ``memory_bytes``: refuse, before decoding, an image whose decoding would need
    more (an estimate from its size and mode)."""
    path = Path(path)
    heif_support()
    source = io.BytesIO(data) if data is not None else path
    with _decoding_errors(path), _captured_warnings() as caught, Image.open(source) as image:
        if memory_bytes is not None:
            _check_decoding_memory(image, path, memory_bytes)
        notes = _single_image_notes(image, path)
        exif = _detached_exif(image, notes)
        xmp = image.info.get("xmp")
        upright = ImageOps.exif_transpose(image)
        upright.info.setdefault("icc_profile", image.info.get("icc_profile"))
        try:
            decoded = to_rgb8(upright, signed_samples=declares_signed_samples(image),
                              sample_bits=declared_sample_bits(image))
        except PixelFormatError as error:
            raise PhotoError(path, str(error)) from None
    if decoded.pixels.ndim != 3 or min(decoded.pixels.shape[:2]) < 1:
        raise PhotoError(path, "empty image")
    notes += [*decoded.notes, *_warning_notes(caught, decoded.pixels.shape)]
    return Photo(pixels=decoded.pixels, format=_photo_format(image), alpha=decoded.alpha,
                 icc_profile=decoded.icc_profile, source=path, greyscale=decoded.greyscale, notes=tuple(notes),
                 exif=exif, xmp=xmp if isinstance(xmp, bytes) else None)


def _photo_format(image: Image.Image) -> str:
    """The format a photo is treated as: its own, a multi-picture JPEG's as JPEG (its first image is the photo)."""
    return "JPEG" if image.format == "MPO" else image.format or "PNG"


def _single_image_notes(image: Image.Image, path: Path) -> list[str]:
    """Refuse an animated or multi-page file, saying which (cloaking one frame would silently drop the rest); a
    multi-picture JPEG (a phone's gain map or preview, a stereo pair) is its first image, with a note."""
    frames = getattr(image, "n_frames", 1)
    if frames <= 1:
        return []
    if image.format == "MPO":
        return [f"multi-picture JPEG ({frames} images): the first is cloaked; the others (previews, gain or depth "
                "maps, stereo views) are not written"]
    kind, unit = _MULTI_FRAME_KINDS.get(image.format or "", ("animated image", "frames"))
    raise PhotoError(path, f"{kind} ({frames} {unit}): not supported, only single still images are cloaked")


_MULTI_FRAME_KINDS = {"TIFF": ("multi-page TIFF", "pages"), "PSD": ("layered PSD", "layers")}


def _detached_exif(image: Image.Image, notes: list[str]) -> Image.Exif | None:
    """The file's EXIF with its sub-IFDs read now, while the file is open (a TIFF's are read lazily from it), so the
    photo can leave the decoding worker; None, with a note, when it cannot be read."""
    try:
        return output_exif(image.getexif(), "keep")  # "keep": every tag, as later policies read them
    except (OSError, ValueError, SyntaxError, struct.error) as error:
        notes.append(f"EXIF unreadable ({first_line(error)}): not kept")
        return None


# Copies of the decoded image alive at once while it becomes RGB (decoded, upright, converted, array, answer).
_DECODING_COPIES = 5


def _check_decoding_memory(image: Image.Image, path: Path, memory_bytes: int) -> None:
    """Refuse, before decoding, an image whose decoding would need more than ``memory_bytes``."""
    width, height = image.size
    mode = ImageMode.getmode(image.mode)
    sample_bytes = np.dtype(mode.typestr).itemsize
    stored = 4 if len(mode.bands) > 1 and sample_bytes == 1 else len(mode.bands) * sample_bytes  # Pillow pads to 4
    needed = width * height * stored * _DECODING_COPIES
    if needed > memory_bytes:
        raise PhotoError(path, f"decoding it needs about {_size(needed)} ({width}x{height} {image.mode}), more "
                         f"than the per-file memory budget of {_size(memory_bytes)}")


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


# One capture at a time: warnings.catch_warnings swaps process-wide state, and the server decodes in threads.
_CAPTURE_LOCK = threading.RLock()
_MAX_WARNING_NOTES = 5
_MAX_NOTE_CHARS = 200


@contextmanager
def _captured_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning raised while one file is decoded (each distinct one once; never printed, re-issued or
    raised, even under ``-W error``); :func:`_warning_notes` makes them the file's notes."""
    with _CAPTURE_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # recorded once per message and place: a loop cannot pile them up
        yield caught


def _warning_notes(caught: list[warnings.WarningMessage], shape: tuple[int, ...]) -> list[str]:
    """The notes of the warnings captured while decoding a photo of ``shape``: Pillow's decompression-bomb warning
    (an image between its warning and error sizes) as the photo's size, every other one as Pillow said it."""
    notes: list[str] = []
    for item in caught:
        if issubclass(item.category, Image.DecompressionBombWarning):
            note = (f"large image ({shape[0] * shape[1] / 1e6:.0f} MP, above Pillow's decompression-bomb warning "
                    "size; decoded)")
        else:
            note = f"Pillow warned: {first_line(item.message)}"[:_MAX_NOTE_CHARS]
        if note not in notes:
            notes.append(note)
    if len(notes) > _MAX_WARNING_NOTES:
        notes[_MAX_WARNING_NOTES:] = [f"and {len(notes) - _MAX_WARNING_NOTES} more warnings"]
    return notes


@contextmanager
def _decoding_errors(path: Path) -> Iterator[None]:
    """Turn what Pillow raises on a bad file into a one-line :class:`PhotoError` (one raised inside passes as it
    is)."""
    try:
        yield
    except PhotoError:
        raise
    except FileNotFoundError:
        raise PhotoError(path, "no such file") from None
    except IsADirectoryError:
        raise PhotoError(path, "is a folder, not a photo") from None
    except PermissionError:
        raise PhotoError(path, "permission denied") from None
    except UnidentifiedImageError:
        if path.suffix.lower() in HEIF_SUFFIXES and not heif_support():
            raise PhotoError(path, "HEIC/HEIF needs pillow-heif: pip install 'comcloak[heif]'") from None
        raise PhotoError(path, "not a readable image") from None
    except Image.DecompressionBombError as error:
        raise PhotoError(path, f"{BOMB_REASON} ({error})") from None
    except NotImplementedError as error:
        raise PhotoError(path, f"unsupported kind of image ({first_line(error)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as error:  # truncated or corrupt data
        raise PhotoError(path, f"corrupt image ({first_line(error)})") from None
