"""The loss registry (torch-free): the names ``--loss`` and ``AttackConfig.validate`` accept, each naming its
implementation lazily (``"module:attribute"``, like ``engine/backends/registry.py``), so listing the names needs no
torch.

A loss is one object with ``value(logits, w) -> (...)`` (the per-image loss, descended, differentiable by autograd)
and ``gradient(logits, w) -> (..., K)`` (its logits gradient written out by hand for the exported graph), both on
``w``-encoded goals (``comcloak.attacks.loss``), plus one :func:`register_loss` line. A package installed beside
comcloak registers its losses from the ``comcloak.losses`` entry-point group (:mod:`comcloak.plugins`).

Example (a loss of your own, in any module)::

    register_loss(LossInfo("hinge", "my_package.losses:HINGE", "what it is"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comcloak import plugins
from comcloak.errors import UserError


class UnknownLossError(UserError, ValueError):
    """A loss name that no registered loss has."""


@dataclass(frozen=True)
class LossInfo:
    """One registered loss.

    Attributes:
        name: what ``--loss`` and ``AttackConfig.loss`` call it.
        implementation: ``"module:attribute"`` of an object with ``value`` and ``gradient`` (imported on first use),
            or that object itself.
        summary: one phrase for ``--help``.
    """

    name: str
    implementation: Any
    summary: str = ""

    def load(self) -> Any:
        """The object with ``value(logits, w)`` and ``gradient(logits, w)``, imported on first use."""
        if not isinstance(self.implementation, str):
            return self.implementation
        return plugins.import_reference(self.implementation)


_REGISTRY: dict[str, LossInfo] = {}


def register_loss(info: LossInfo) -> LossInfo:
    """Add ``info`` to the registry (a later registration of the same name replaces it); returns ``info``."""
    plugins.check_entry_name("loss", info.name)
    _REGISTRY[info.name] = info
    return info


def unregister_loss(name: str) -> None:
    """Remove the loss ``name``; unknown names are ignored."""
    _REGISTRY.pop(name, None)


def loss_names() -> tuple[str, ...]:
    """Registered loss names, in registration order (entry-point plugins included)."""
    plugins.load_plugins(plugins.LOSSES)
    return tuple(_REGISTRY)


def get_loss(name: str) -> LossInfo:
    """The registered loss ``name``; raises :class:`UnknownLossError` naming the known ones."""
    plugins.load_plugins(plugins.LOSSES)
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownLossError(f"unknown loss {name!r}; available: {', '.join(_REGISTRY)}") from None


# The shipped losses (comcloak.attacks.loss): one line each.
register_loss(LossInfo("ce", "comcloak.attacks.loss:CROSS_ENTROPY", "cross-entropy, the paper's"))
register_loss(LossInfo("margin", "comcloak.attacks.loss:MARGIN", "out of the top-5 (hide@5), floored"))
register_loss(LossInfo("identity", "comcloak.attacks.loss:IDENTITY", "away from the clean identity (face cloak)"))
