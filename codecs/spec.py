"""Codec spec strings: ``jpeg:50``, ``webp:75``, ``jp2:10``, ``avif:60``, ``png``, ``resize:2048``, ``none``, and the
platform profiles (``facebook``, ``whatsapp``, ...; :mod:`comcloak.codecs.platforms`).

Elements are ``name[:arg[:arg]]`` joined with ``+`` and applied left to right (``resize:2048+jpeg:85``).
Names are case-insensitive and surrounding whitespace is ignored; ``Codec.spec`` is the canonical form, and
``parse_codec(codec.spec) == codec`` for every codec.
"""

from __future__ import annotations

from .base import Codec, CodecSpecError, CodecUnavailableError
from .platforms import PROFILES, Platform
from .real import Chain
from .registry import get_codec, registered_codecs

__all__ = ["Codec", "CodecSpecError", "CodecUnavailableError", "parse_codec", "list_codecs", "list_profiles"]


def list_codecs() -> list[str]:
    """Known codecs as ``"usage: description"`` lines, for help text and error messages."""
    return [f"{cls.usage}: {cls.help}" for cls in registered_codecs()]


def list_profiles() -> list[str]:
    """Platform profiles as ``"name: description (chain)"`` lines."""
    return [f"{profile.name}: {profile.description} ({profile.chain})" for profile in PROFILES.values()]


def _known() -> str:
    return ", ".join([cls.usage for cls in registered_codecs()] + list(PROFILES))


def _parse_element(element: str) -> Codec:
    name, *args = (part.strip() for part in element.split(":"))
    if name.lower() in PROFILES:
        if args:
            raise CodecSpecError(f"platform profile {name!r} takes no arguments, got {element!r}")
        return Platform(name.lower())
    try:
        cls = get_codec(name.lower())
    except CodecSpecError:  # the same error, naming the element and the profiles too
        raise CodecSpecError(f"unknown codec {name!r} in {element!r}; known codecs: {_known()}") from None
    return cls.from_args(args)


def parse_codec(spec: str) -> Codec:
    """Parse a spec string into a Codec (a Chain when it has several ``+``-joined elements).

    Raises CodecSpecError with a one-line message naming the bad part and what would be valid.
    """
    if not isinstance(spec, str):
        raise CodecSpecError(f"codec spec must be a string, got {type(spec).__name__}")
    if not spec.strip():
        raise CodecSpecError(f"empty codec spec; expected e.g. 'jpeg:50' or 'resize:2048+jpeg:85' ({_known()})")
    elements = spec.split("+")
    codecs: list[Codec] = []
    for position, element in enumerate(elements, start=1):
        if not element.strip():
            raise CodecSpecError(
                f"codec spec {spec!r} has an empty element at position {position} of {len(elements)}; "
                "join codecs as 'a+b', e.g. 'resize:2048+jpeg:85'"
            )
        codecs.append(_parse_element(element.strip()))
    return codecs[0] if len(codecs) == 1 else Chain(codecs)
