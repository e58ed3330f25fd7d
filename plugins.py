"""Extensions from other installed packages, through entry points (torch-free).

Each registry has one entry-point group. A package installed beside comcloak extends the installed CLI, the server
and the Python API by naming, in its own ``pyproject.toml``, a module whose import registers its entries (or a
function of no arguments that does)::

    [project.entry-points."comcloak.backends"]
    mine = "my_package.runner"            # the module calls register_backend(...) when imported

A registry calls :func:`load_plugins` with its group before it lists or looks up a name, so a plugin is imported
only when that registry is first used, once per process. A plugin that fails to import is left out with one warning
naming it and its package; it never stops comcloak or another plugin.
"""

from __future__ import annotations

import importlib
import logging
from importlib import metadata
from typing import Any

from comcloak.errors import first_line

logger = logging.getLogger(__name__)

BACKENDS = "comcloak.backends"
CLASSIFIERS = "comcloak.classifiers"
CODECS = "comcloak.codecs"
THROUGHS = "comcloak.throughs"
LOSSES = "comcloak.losses"
ATTACKS = "comcloak.attacks"
FACE_MODELS = "comcloak.face_models"
GROUPS = (BACKENDS, CLASSIFIERS, CODECS, THROUGHS, LOSSES, ATTACKS, FACE_MODELS)

_loaded: set[str] = set()


def load_plugins(group: str) -> list[str]:
    """Import every entry point of ``group`` once per process; returns the names loaded by this call.

    Example:
        >>> load_plugins(BACKENDS)  # doctest: +SKIP
        ['mine']
    """
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; groups: {', '.join(GROUPS)}")
    if group in _loaded:
        return []
    _loaded.add(group)  # before loading: a plugin that lists the registry while it registers must not recurse
    names = []
    for entry in metadata.entry_points(group=group):
        try:
            target = entry.load()
            if callable(target) and not isinstance(target, type):
                target()
        except Exception as error:  # a broken plugin is that plugin's problem, never comcloak's
            package = entry.dist.name if entry.dist is not None else "an unknown package"
            logger.warning("plugin %r (%s, from %s) left out: %s: %s", entry.name, group, package,
                           type(error).__name__, first_line(error))
            continue
        names.append(entry.name)
    return names


def import_reference(reference: str) -> Any:
    """The object a ``"module:attribute"`` string names, imported when asked (how registries name implementations
    lazily, so listing their names imports nothing heavy)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def check_entry_name(what: str, name: object) -> None:
    """Refuse a registry name that a comma-separated option could not carry (lower case, no spaces or commas)."""
    if not isinstance(name, str) or not name or name != name.strip().lower() or "," in name:
        raise ValueError(f"{what} name must be lower case without spaces or commas, got {name!r}")
