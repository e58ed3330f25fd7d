"""Model registry in the timm style: ``@register_model`` factories, ``create_model(name, **kw)``.

Classifiers of other installed packages join through the entry-point group ``comcloak.classifiers``
(:mod:`comcloak.plugins`): its modules are imported, and so register their factories, before the registry is first
listed or looked up, so ``comcloak cloak --classifier NAME`` finds them.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from comcloak import plugins
from comcloak.errors import UserError

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(UserError, ValueError):
    """Raised by :func:`create_model` for a name that no factory was registered under."""

    def __init__(self, name: str, available: list[str]) -> None:
        # One line, naming what was asked and what exists, so a CLI can print it as is.
        super().__init__(f"unknown model {name!r}; available models: {', '.join(available) or '(none)'}")
        self.name = name
        self.available = available


def register_model(fn: _F) -> _F:
    """Register a model factory under its function name; returns the function unchanged."""
    name = fn.__name__
    if name in _REGISTRY and _REGISTRY[name] is not fn:
        # A silent overwrite would make create_model() depend on import order.
        raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].__module__}")
    _REGISTRY[name] = fn
    return fn


def _table() -> dict[str, Callable[..., nn.Module]]:
    """The registry, once the installed packages' classifiers (entry-point group ``comcloak.classifiers``) joined.

    A plugin whose import registers a model does not recurse here: :func:`~comcloak.plugins.load_plugins` marks the
    group loaded before it imports the plugin.
    """
    plugins.load_plugins(plugins.CLASSIFIERS)
    return _REGISTRY


def list_models(filter: str = "") -> list[str]:
    """Sorted registered names; ``filter`` is a shell pattern (``"mobile*"``) or, without wildcards, a substring."""
    names = sorted(_table())
    if not filter:
        return names
    if any(c in filter for c in "*?["):
        return [n for n in names if fnmatch.fnmatchcase(n, filter)]
    return [n for n in names if filter in n]


def is_model(name: str) -> bool:
    """Whether ``name`` is registered."""
    return name in _table()


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name``; keyword arguments go to its factory (e.g. ``pretrained=False``)."""
    try:
        factory = _table()[name]
    except KeyError:
        raise UnknownModelError(name, list_models()) from None
    logger.debug("creating model %s with %s", name, kwargs)
    return factory(**kwargs)
