"""Every pixel format Pillow decodes, brought to the one the attack works on (uint8 RGB) without destroying it.

Pillow's own ``convert("RGB")`` clips 16-bit, 32-bit and float samples to 0..255 (a 16-bit greyscale photo becomes
all white) and ignores colour profiles; :func:`to_rgb8` scales samples by their real range and converts CMYK through
its ICC profile. What it did is said in :attr:`Decoded.notes`, so a report can show it.

Rules (also in docs/inputs-outputs.md):

- 8-bit greyscale, bilevel, RGB, palette: exact; alpha kept apart, a transparent colour (PNG ``tRNS`` on greyscale,
  bilevel or RGB) included.
- 16-bit integer (``I;16*``): scaled by its declared depth, 65535 -> 255 (divided by 257, the exact inverse of
  8->16-bit widening), or 4095 -> 255 for a TIFF declaring 12 bits per sample. When that would leave the photo fewer
  than :data:`TINY_RANGE_LEVELS` levels of its own range (``291..694`` of 65535 is 2 levels), the samples are scaled
  by their real range as 32-bit ones are, and written at 8 bits that way: the attack needs the levels, and an
  8-bit output at the original range could hold neither the photo nor its cloak.
- 32-bit integer (``I``) and float (``F``): float data within [0, 1] is scaled by 255; anything else linearly from
  ``min(0, lowest)`` to the highest value present (its real range), so black stays black. NaN or infinite samples
  are refused.
- Signed 8-bit TIFF samples (which Pillow reads as unsigned) are reinterpreted, then scaled by their real range.
- CMYK/YCCK: through the file's CMYK ICC profile to sRGB when it has one (the output then carries sRGB), otherwise
  Pillow's naive conversion (said in the notes).
- Greyscale inputs keep ``greyscale=True``: the cloak is written back as greyscale (its luminance).

The colour profile returned is always valid for the output's mode: an RGB profile for RGB output, a GRAY profile for
greyscale output, never a CMYK or GRAY profile on RGB pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

MAX_8BIT = 255.0
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_SAMPLE_FORMAT = 339
TINY_RANGE_LEVELS = 16  # fewer 8-bit levels than this across a deep photo's samples: scale by its real range
_TIFF_SIGNED = 2
_ICC_COLOUR_SPACE = slice(16, 20)  # the data colour space signature in an ICC profile's header


class PixelFormatError(ValueError):
    """The pixels cannot be brought to RGB faithfully; the message is the one-line reason."""


@dataclass
class Decoded:
    """``pixels`` uint8 RGB (H, W, 3); ``alpha`` uint8 (H, W) or None; ``icc_profile`` valid for the output's mode;
    ``greyscale``: the input was greyscale (write the output greyscale); ``notes``: what was done to the samples."""

    pixels: np.ndarray
    alpha: np.ndarray | None
    icc_profile: bytes | None
    greyscale: bool
    notes: tuple[str, ...] = ()


def icc_colour_space(profile: bytes | None) -> str | None:
    """The data colour space an ICC profile describes (``"RGB"``, ``"GRAY"``, ``"CMYK"``, ...), None if unreadable."""
    if not profile or len(profile) < _ICC_COLOUR_SPACE.stop:
        return None
    return profile[_ICC_COLOUR_SPACE].decode("ascii", "replace").strip() or None


def to_rgb8(image: Image.Image, signed_samples: bool = False, sample_bits: int | None = None) -> Decoded:
    """Decode an (already upright) Pillow image to uint8 RGB by the module's rules; raises :class:`PixelFormatError`.
    ``signed_samples``: the file declares signed 8-bit samples, ``sample_bits`` its bits per sample
    (:func:`declares_signed_samples` and :func:`declared_sample_bits` of the file as opened, since transposing drops
    the TIFF tags).

    Example:
        >>> decoded = to_rgb8(Image.fromarray(np.full((2, 2), 65535, np.uint16)))
        >>> int(decoded.pixels.max()), decoded.greyscale
        (255, True)
    """
    profile = image.info.get("icc_profile")
    space = icc_colour_space(profile)
    mode = image.mode
    notes: list[str] = []
    alpha = _alpha(image, notes) if has_alpha(image) else None
    if mode in GREY_MODES:
        grey = _grey8(image, signed_samples, sample_bits, notes)
        pixels = np.repeat(grey[..., None], 3, axis=2)
        return Decoded(pixels, alpha, profile if space == "GRAY" else None, True, tuple(notes))
    if mode == "CMYK":
        pixels, profile = _cmyk_to_rgb(image, profile if space == "CMYK" else None, notes)
        return Decoded(pixels, alpha, profile, False, tuple(notes))
    try:
        # through RGBA when there is alpha: Pillow warns converting a palette with transparency straight to RGB
        rgb = (image.convert("RGBA") if alpha is not None else image).convert("RGB")
    except (ValueError, OSError) as error:
        raise PixelFormatError(f"unsupported pixel format {mode} ({error})") from None
    if mode not in ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA"):
        notes.append(f"{mode} pixels converted to RGB")
    return Decoded(np.asarray(rgb).copy(), alpha, profile if space == "RGB" else None, False, tuple(notes))


def has_alpha(image: Image.Image) -> bool:
    """Whether ``image`` (opened, not decoded) has an alpha channel, or a transparent colour or palette entry."""
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def _alpha(image: Image.Image, notes: list[str]) -> np.ndarray | None:
    """The alpha channel of an image with one, or with a transparent colour (``tRNS``), as uint8 (H, W)."""
    try:
        return np.asarray(image.convert("RGBA"))[..., 3].copy()
    except (ValueError, OSError) as error:  # a transparent colour Pillow cannot apply to this mode
        notes.append(f"transparency of a {image.mode} image not applied ({error})")
        return None


def _grey8(image: Image.Image, signed_samples: bool, sample_bits: int | None, notes: list[str]) -> np.ndarray:
    """The greyscale samples of ``image`` as uint8 (H, W), scaled by the module's rules."""
    mode = image.mode
    if mode in ("1", "L", "LA", "La"):
        grey = np.asarray(image.convert("L")).copy()
        if mode == "L" and signed_samples:
            notes.append("signed 8-bit samples")
            return _scaled_by_range(grey.view(np.int8).astype(np.float64), notes)
        return grey
    samples = np.asarray(image)
    values = samples.astype(np.float64)
    if mode in _SIXTEEN_BIT_MODES:
        return _deep_grey8(values, sample_bits, notes)
    if not np.isfinite(values).all():
        raise PixelFormatError("the image holds NaN or infinite samples")
    if mode == "F" and values.min() >= 0 and values.max() <= 1:
        notes.append("floating-point samples in [0, 1] scaled to 8 bits")
        return np.rint(values * MAX_8BIT).astype(np.uint8)
    kind = "floating-point" if mode == "F" else "32-bit integer"
    notes.append(f"{kind} samples")
    return _scaled_by_range(values, notes)


def _deep_grey8(values: np.ndarray, sample_bits: int | None, notes: list[str]) -> np.ndarray:
    """16-bit container samples as uint8 by their declared depth, or by their real range when the depth would
    leave fewer than :data:`TINY_RANGE_LEVELS` levels of it."""
    low, high = float(values.min()), float(values.max())
    bits = sample_bits if sample_bits and high < 2**sample_bits else 16  # samples above the declared depth: 16
    full_scale = float(2**bits - 1)
    levels = round(high * MAX_8BIT / full_scale) - round(low * MAX_8BIT / full_scale)
    if levels < TINY_RANGE_LEVELS <= high - low:
        notes.append(f"{bits}-bit samples span only {low:g}..{high:g} of 0..{full_scale:g} ({levels} levels at 8 "
                     "bits)")
        return _scaled_by_range(values, notes)
    notes.append(f"{bits}-bit samples scaled to 8 bits")
    return np.rint(values * (MAX_8BIT / full_scale)).astype(np.uint8)


def _scaled_by_range(values: np.ndarray, notes: list[str]) -> np.ndarray:
    low, high = min(0.0, float(values.min())), float(values.max())
    notes.append(f"scaled from their range {low:g}..{high:g} to 8 bits")
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - low) * (MAX_8BIT / (high - low))).astype(np.uint8)


def declared_sample_bits(image: Image.Image) -> int | None:
    """The bits per sample a TIFF declares (12 for a 12-bit one read into 16-bit samples), None for other files."""
    bits = getattr(image, "tag_v2", {}).get(_TIFF_BITS_PER_SAMPLE)
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return bits if isinstance(bits, int) and 1 <= bits <= 16 else None


def declares_signed_samples(image: Image.Image) -> bool:
    """Whether a TIFF declares signed integer samples (SampleFormat 2)."""
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return False
    sample_format = tags.get(_TIFF_SAMPLE_FORMAT)
    if isinstance(sample_format, tuple):
        sample_format = sample_format[0]
    return sample_format == _TIFF_SIGNED


def _cmyk_to_rgb(image: Image.Image, cmyk_profile: bytes | None, notes: list[str]) -> tuple[np.ndarray, bytes | None]:
    """CMYK to RGB through its profile to sRGB (returning the sRGB profile for the output), else naively."""
    if cmyk_profile is not None:
        from PIL import ImageCms

        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(cmyk_profile))
            target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            rgb = ImageCms.profileToProfile(image, source, target, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError) as error:
            notes.append(f"CMYK profile unusable ({error}); converted without it")
        else:
            notes.append("CMYK converted to sRGB through its ICC profile")
            return np.asarray(rgb).copy(), target.tobytes()
    else:
        notes.append("CMYK without a colour profile: converted naively")
    return np.asarray(image.convert("RGB")).copy(), None
