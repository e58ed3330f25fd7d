"""comcloak.codecs: real codecs (Pillow) and their registry, codec chains and spec strings, and diff-JPEG.

``DiffJPEG`` needs torch and is imported lazily, so ``import comcloak.codecs`` stays light for pure codec use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Codec, CodecSpecError, CodecUnavailableError, ComModelSetting
from .platforms import PROFILES, Platform
from .real import Avif, Chain, Identity, Jpeg, Jpeg2000, Png, Resize, WebP
from .registry import codec_names, get_codec, register_codec, unregister_codec
from .spec import list_codecs, list_profiles, parse_codec

if TYPE_CHECKING:
    from .diffjpeg import DiffJPEG

__all__ = [
    "Avif",
    "Chain",
    "Codec",
    "CodecSpecError",
    "CodecUnavailableError",
    "ComModelSetting",
    "DiffJPEG",
    "Identity",
    "Jpeg",
    "Jpeg2000",
    "PROFILES",
    "Platform",
    "Png",
    "Resize",
    "WebP",
    "codec_names",
    "get_codec",
    "list_codecs",
    "list_profiles",
    "parse_codec",
    "register_codec",
    "unregister_codec",
]


def __getattr__(name: str) -> Any:
    if name == "DiffJPEG":
        from .diffjpeg import DiffJPEG

        return DiffJPEG
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
