"""comcloak.codecs: real codecs (Pillow), codec chains and spec strings, and the differentiable-JPEG baseline.

``DiffJPEG`` needs torch and is imported lazily, so ``import comcloak.codecs`` stays light for pure codec use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Codec, CodecSpecError, CodecUnavailableError
from .platforms import PROFILES, Platform
from .real import Avif, Chain, Identity, Jpeg, Jpeg2000, Png, Resize, WebP
from .spec import list_codecs, list_profiles, parse_codec

if TYPE_CHECKING:
    from .diffjpeg import DiffJPEG

__all__ = [
    "Avif",
    "Chain",
    "Codec",
    "CodecSpecError",
    "CodecUnavailableError",
    "DiffJPEG",
    "Identity",
    "Jpeg",
    "Jpeg2000",
    "PROFILES",
    "Platform",
    "Png",
    "Resize",
    "WebP",
    "list_codecs",
    "list_profiles",
    "parse_codec",
]


def __getattr__(name: str) -> Any:
    if name == "DiffJPEG":
        from .diffjpeg import DiffJPEG

        return DiffJPEG
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
