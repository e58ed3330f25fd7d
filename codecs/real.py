"""Real codecs run through Pillow (libjpeg-turbo, libwebp, OpenJPEG, libavif, zlib) plus resize and chains.

Each codec encodes to an in-memory buffer with the real library and decodes it back, so the pixels are exactly
what a platform using the same library and settings would serve. Pillow's decompression-bomb guard stays on:
decoding our own output of an image above ``PIL.Image.MAX_IMAGE_PIXELS`` warns (or raises at twice that).
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image, features

from .base import Codec, CodecSpecError, CodecUnavailableError, ComModelSetting, check_image
from .registry import register_codec

logger = logging.getLogger(__name__)

_INT_RE = re.compile(r"\d+")
# Plain decimal numbers only: no signs, exponents, 'nan' or 'inf', so a spec reads the same everywhere.
_NUMBER_RE = re.compile(r"\d+(\.\d*)?|\.\d+")


def _parse_int(text: str, what: str, lo: int, hi: int | None) -> int:
    """Parse a bounded decimal integer argument, raising CodecSpecError that names the valid range."""
    valid = f"{lo}..{hi}" if hi is not None else f">= {lo}"
    if _INT_RE.fullmatch(text) is None:
        raise CodecSpecError(f"{what} must be an integer {'in ' if hi is not None else ''}{valid}, got {text!r}")
    value = int(text)
    if value < lo or (hi is not None and value > hi):
        raise CodecSpecError(f"{what} must be an integer {'in ' if hi is not None else ''}{valid}, got {text!r}")
    return value


def _check_arity(name: str, args: Sequence[str], min_args: int, max_args: int, usage: str) -> None:
    if not min_args <= len(args) <= max_args:
        got = ":".join([name, *args])
        raise CodecSpecError(f"{name} expects {usage!r}, got {got!r}")


def _roundtrip(image: np.ndarray, fmt: str, **params: Any) -> np.ndarray:
    """Encode ``image`` with Pillow's ``fmt`` writer into memory and decode it back to HxWx3 uint8 RGB."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(buffer, format=fmt, **params)
    data = buffer.getvalue()
    logger.debug("%s %dx%d -> %d bytes", fmt, image.shape[1], image.shape[0], len(data))
    # formats=[fmt] so the decoder is the one we encoded with, never a guess from the header.
    with Image.open(io.BytesIO(data), formats=[fmt]) as decoded:
        return np.array(decoded.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True, repr=False)
class _NoArgumentCodec(Codec):
    """A codec spelled by its name alone (``none``, ``png``)."""

    @classmethod
    def from_args(cls, args: Sequence[str]) -> _NoArgumentCodec:
        _check_arity(cls.name, args, 0, 0, cls.usage)
        return cls()

    @property
    def spec(self) -> str:
        return self.name


@dataclass(frozen=True, repr=False)
class Identity(_NoArgumentCodec):
    """``none``: returns a copy of the image unchanged."""

    name: ClassVar[str] = "none"
    usage: ClassVar[str] = "none"
    help: ClassVar[str] = "no compression (identity)"
    @property
    def stand_in(self) -> str:
        return "none"  # nothing to imitate

    def apply(self, image: np.ndarray) -> np.ndarray:
        check_image(image)
        return image.copy()


@dataclass(frozen=True, repr=False)
class Png(_NoArgumentCodec):
    """``png``: lossless PNG; the decoded image equals the input exactly."""

    name: ClassVar[str] = "png"
    usage: ClassVar[str] = "png"
    help: ClassVar[str] = "lossless PNG"

    def apply(self, image: np.ndarray) -> np.ndarray:
        check_image(image)
        # Level 1: pixels are identical at any level, and the fastest level keeps large-image pipelines cheap.
        return _roundtrip(image, "PNG", compress_level=1)


_JPEG_SUBSAMPLING = {"444": "4:4:4", "422": "4:2:2", "420": "4:2:0"}


@dataclass(frozen=True, repr=False)
class Jpeg(Codec):
    """``jpeg:Q[:SUB]``: baseline JPEG (libjpeg-turbo) at IJG quality Q, chroma subsampling SUB (default 420)."""

    quality: int
    subsampling: str = "420"

    name: ClassVar[str] = "jpeg"
    usage: ClassVar[str] = "jpeg:Q[:444|422|420]"
    help: ClassVar[str] = "JPEG, quality Q in 1..100, chroma subsampling (default 420)"

    def __post_init__(self) -> None:
        # Direct construction gets the same checks as parsing.
        _parse_int(str(self.quality), "jpeg quality", 1, 100)
        if self.subsampling not in _JPEG_SUBSAMPLING:
            raise CodecSpecError(
                f"jpeg chroma subsampling must be one of {', '.join(_JPEG_SUBSAMPLING)}, got {self.subsampling!r}"
            )

    @classmethod
    def from_args(cls, args: Sequence[str]) -> Jpeg:
        _check_arity(cls.name, args, 1, 2, cls.usage)
        quality = _parse_int(args[0], "jpeg quality", 1, 100)
        return cls(quality, args[1] if len(args) > 1 else "420")

    @property
    def spec(self) -> str:
        # The default subsampling is left out so 'jpeg:50' and 'jpeg:50:420' share one canonical form.
        return f"jpeg:{self.quality}" if self.subsampling == "420" else f"jpeg:{self.quality}:{self.subsampling}"

    @property
    def stand_in(self) -> str:
        return f"diffjpeg:{self.quality}"

    def comodel_setting(self) -> ComModelSetting:
        # The codec's own tables: the untrained coder then is a differentiable JPEG (the calibration grid has no
        # 25, and a neighbouring table rounds many coefficients differently: several times the error).
        return ComModelSetting(8, 2 if self.subsampling == "420" else 1, self.quality)

    def apply(self, image: np.ndarray) -> np.ndarray:
        check_image(image)
        # optimize=False: Huffman optimisation changes only the file size, and platforms typically leave it off.
        return _roundtrip(
            image, "JPEG", quality=self.quality, subsampling=_JPEG_SUBSAMPLING[self.subsampling], optimize=False
        )


@dataclass(frozen=True, repr=False)
class _QualityCodec(Codec):
    """A lossy codec with one argument, an integer quality in 0..100 (``NAME:Q``)."""

    quality: int

    def __post_init__(self) -> None:
        _parse_int(str(self.quality), f"{self.name} quality", 0, 100)

    @classmethod
    def from_args(cls, args: Sequence[str]) -> _QualityCodec:
        _check_arity(cls.name, args, 1, 1, cls.usage)
        return cls(_parse_int(args[0], f"{cls.name} quality", 0, 100))

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.quality}"


@dataclass(frozen=True, repr=False)
class WebP(_QualityCodec):
    """``webp:Q``: lossy WebP (libwebp) at quality Q."""

    name: ClassVar[str] = "webp"
    usage: ClassVar[str] = "webp:Q"
    help: ClassVar[str] = "lossy WebP, quality Q in 0..100"

    def comodel_setting(self) -> ComModelSetting:
        return ComModelSetting(4, 2)  # VP8's 4x4 transform, 4:2:0 chroma

    def apply(self, image: np.ndarray) -> np.ndarray:
        check_image(image)
        return _roundtrip(image, "WEBP", quality=self.quality, lossless=False)


def _format_ratio(ratio: float) -> str:
    # Integral ratios print without '.0' ('jp2:10'); others use repr, which round-trips through float().
    return str(int(ratio)) if ratio.is_integer() else repr(ratio)


@dataclass(frozen=True, repr=False)
class Jpeg2000(Codec):
    """``jp2:R``: JPEG 2000 (OpenJPEG), irreversible 9/7 wavelet, one quality layer at compression ratio R."""

    ratio: float

    name: ClassVar[str] = "jp2"
    usage: ClassVar[str] = "jp2:R"
    help: ClassVar[str] = "JPEG 2000, compression ratio R > 1 (paper: jp2:10, jp2:20)"

    def __post_init__(self) -> None:
        if not (isinstance(self.ratio, (int, float)) and math.isfinite(self.ratio) and self.ratio > 1):
            raise CodecSpecError(f"jp2 compression ratio must be a number > 1, got {self.ratio!r}")
        object.__setattr__(self, "ratio", float(self.ratio))

    @classmethod
    def from_args(cls, args: Sequence[str]) -> Jpeg2000:
        _check_arity(cls.name, args, 1, 1, cls.usage)
        text = args[0]
        if _NUMBER_RE.fullmatch(text) is None or float(text) <= 1:
            raise CodecSpecError(f"jp2 compression ratio must be a number > 1, got {text!r}")
        return cls(float(text))

    @property
    def spec(self) -> str:
        return f"jp2:{_format_ratio(self.ratio)}"

    def apply(self, image: np.ndarray) -> np.ndarray:
        check_image(image)
        # "rates" mode: the layer's value is the compression ratio against the raw 24-bit image.
        return _roundtrip(
            image, "JPEG2000", quality_mode="rates", quality_layers=[self.ratio], irreversible=True, no_jp2=True
        )


@dataclass(frozen=True, repr=False)
class Avif(_QualityCodec):
    """``avif:Q``: AVIF (libavif) at quality Q; parses everywhere, runs only where Pillow has AVIF support."""

    name: ClassVar[str] = "avif"
    usage: ClassVar[str] = "avif:Q"
    help: ClassVar[str] = "AVIF, quality Q in 0..100 (needs a Pillow build with AVIF)"

    def apply(self, image: np.ndarray) -> np.ndarray:
        check_image(image)
        if not features.check("avif"):
            raise CodecUnavailableError(
                f"{self.spec} is unavailable: this Pillow build ({Image.__version__}) has no AVIF support"
            )
        return _roundtrip(image, "AVIF", quality=self.quality)


@dataclass(frozen=True, repr=False)
class Resize(Codec):
    """``resize:N``: scale so the longest side is N (Lanczos, aspect kept); images already that small are untouched."""

    longest: int

    name: ClassVar[str] = "resize"
    usage: ClassVar[str] = "resize:N"
    help: ClassVar[str] = "downscale so the longest side is N pixels (Lanczos, never upscales)"
    preserves_size = False

    def __post_init__(self) -> None:
        _parse_int(str(self.longest), "resize longest side", 1, None)

    @classmethod
    def from_args(cls, args: Sequence[str]) -> Resize:
        _check_arity(cls.name, args, 1, 1, cls.usage)
        return cls(_parse_int(args[0], "resize longest side", 1, None))

    @property
    def spec(self) -> str:
        return f"resize:{self.longest}"

    def comodel_setting(self) -> ComModelSetting:
        return ComModelSetting(rescales=True)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        long_side = max(height, width)
        if long_side <= self.longest:
            return height, width
        # Integer round-half-up of side * N / long, at least 1 pixel; the longest side becomes exactly N.
        return (
            max(1, (2 * height * self.longest + long_side) // (2 * long_side)),
            max(1, (2 * width * self.longest + long_side) // (2 * long_side)),
        )

    def apply(self, image: np.ndarray) -> np.ndarray:
        check_image(image)
        height, width = self.output_size(image.shape[0], image.shape[1])
        if (height, width) == image.shape[:2]:
            return image.copy()
        resized = Image.fromarray(np.ascontiguousarray(image), mode="RGB").resize(
            (width, height), Image.Resampling.LANCZOS
        )
        return np.array(resized, dtype=np.uint8)


@dataclass(frozen=True, repr=False, init=False)
class Chain(Codec):
    """Codecs applied left to right, e.g. ``resize:2048+jpeg:85`` (a platform profile)."""

    codecs: tuple[Codec, ...]

    def __init__(self, codecs: Iterable[Codec]) -> None:
        flat: list[Codec] = []
        for codec in codecs:
            if not isinstance(codec, Codec):
                raise TypeError(f"Chain takes Codec instances, got {type(codec).__name__}")
            # Nested chains are flattened so equal pipelines compare equal and print the same spec.
            flat.extend(codec.codecs if isinstance(codec, Chain) else (codec,))
        if not flat:
            raise CodecSpecError("a codec chain needs at least one codec")
        object.__setattr__(self, "codecs", tuple(flat))

    @property
    def preserves_size(self) -> bool:  # type: ignore[override]
        return all(codec.preserves_size for codec in self.codecs)

    @property
    def spec(self) -> str:
        return "+".join(codec.spec for codec in self.codecs)

    def comodel_setting(self) -> ComModelSetting:
        """The last codec's setting, or the generic one when a codec in the chain rescales (its grid is hidden)."""
        settings = [codec.comodel_setting() for codec in self.codecs]
        return ComModelSetting() if any(setting.rescales for setting in settings) else settings[-1]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        for codec in self.codecs:
            height, width = codec.output_size(height, width)
        return height, width

    def apply(self, image: np.ndarray) -> np.ndarray:
        check_image(image)
        for codec in self.codecs:
            image = codec.apply(image)
        return image


# The shipped codecs, in the order help text lists them: one line each (codecs/registry.py).
register_codec(Identity)
register_codec(Jpeg)
register_codec(WebP)
register_codec(Jpeg2000)
register_codec(Avif)
register_codec(Png)
register_codec(Resize)
