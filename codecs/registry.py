"""The codec registry (torch-free): one entry per codec spec name, in the order help text lists them.

A codec is one :class:`~comcloak.codecs.base.Codec` subclass (``name``, ``usage``, ``help``, ``from_args``,
``spec``, ``apply``; it declares its own stand-in and ComModel setting, ``Codec.stand_in`` and
``Codec.comodel_setting``) plus one :func:`register_codec` line. Specs, ``--check``, ``--codecs``, platform chains
and ``comodel:auto`` then accept it. A package installed beside comcloak registers its codecs from the
``comcloak.codecs`` entry-point group (:mod:`comcloak.plugins`), loaded before the first lookup.

Example (a codec of your own, in any module)::

    @dataclass(frozen=True, repr=False)
    class Posterize(Codec):
        name: ClassVar[str] = "posterize"
        ...

    register_codec(Posterize)
"""

from __future__ import annotations

import re

from comcloak import plugins

from .base import Codec, CodecSpecError

_NAME_RE = re.compile(r"[a-z][a-z0-9_-]*")  # no ':', '+', ',' or '|': those separate parts of specs

_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(codec: type[Codec]) -> type[Codec]:
    """Add the codec class ``codec`` under ``codec.name`` (a later registration of the same name replaces it).

    Returns the class, so this also works as a class decorator.
    """
    name = getattr(codec, "name", None)
    if not (isinstance(codec, type) and issubclass(codec, Codec)):
        raise TypeError(f"register_codec takes a Codec subclass, got {codec!r}")
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise ValueError(f"codec name must be lower-case letters, digits, '_' or '-', got {name!r}")
    for attribute in ("usage", "help"):
        if not isinstance(getattr(codec, attribute, None), str):
            raise ValueError(f"codec {name!r} needs a class attribute {attribute!r} (a string for help text)")
    _REGISTRY[name] = codec
    return codec


def unregister_codec(name: str) -> None:
    """Remove the codec ``name`` (tests and plugins that replace a codec); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def codec_names() -> tuple[str, ...]:
    """Registered codec names, in registration order (entry-point plugins included)."""
    plugins.load_plugins(plugins.CODECS)
    return tuple(_REGISTRY)


def registered_codecs() -> tuple[type[Codec], ...]:
    """Every registered codec class, in registration order."""
    plugins.load_plugins(plugins.CODECS)
    return tuple(_REGISTRY.values())


def get_codec(name: str) -> type[Codec]:
    """The codec class registered as ``name``; raises :class:`CodecSpecError` naming the known codecs."""
    plugins.load_plugins(plugins.CODECS)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CodecSpecError(f"unknown codec {name!r}; known codecs: {', '.join(_REGISTRY)}") from None
