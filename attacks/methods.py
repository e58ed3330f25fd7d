"""The attack-method registry (torch-free): FGSM, BIM and MIM as settings of the one loop, each with its defaults.

Every method runs the same loop (docs/DESIGN.md §2); a method is only its defaults (steps, alpha, momentum) and what
it refuses. ``attack_config`` fills a user's missing numbers from here and ``AttackConfig.validate``, the CLI's
``--attack`` choices and ``comcloak eval --attacks`` list the registered names. A package installed beside comcloak
registers its methods from the ``comcloak.attacks`` entry-point group (:mod:`comcloak.plugins`).

Example (a method of your own, in any module)::

    register_attack_method(AttackMethod("bim20", "BIM with 20 steps by default", steps=20))
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from comcloak import defaults, plugins


@dataclass(frozen=True)
class AttackMethod:
    """One attack method: its name and its defaults.

    Attributes:
        name: what ``--attack`` and ``AttackConfig.method`` call it (lower case).
        summary: one phrase for help text.
        steps: the default number of steps.
        fixed_steps: the method takes exactly ``steps`` steps (FGSM: one); asking for other counts is refused.
        momentum: the default μ.
        takes_momentum: whether a user may give μ (BIM and FGSM refuse a non-zero one).

    alpha defaults to eps / steps for every method (the paper's α = ε/10; FGSM's one step of size eps).
    """

    name: str
    summary: str = ""
    steps: int = defaults.STEPS
    fixed_steps: bool = False
    momentum: float = 0.0
    takes_momentum: bool = False

    def resolve(
        self, eps: float, steps: int | None, alpha: float | None, momentum: float | None
    ) -> tuple[int | None, float | None, float | None]:
        """``(steps, alpha, momentum)`` with this method's defaults filled in; refuses what it does not take.

        Numbers of the wrong kind pass through unchanged for ``AttackConfig.validate`` to refuse with its message.
        """
        from comcloak.attacks.config import AttackConfigError  # config imports this module: imported when used

        if self.fixed_steps:
            if steps not in (None, self.steps):
                more = " or ".join(entry.name for entry in registered_attack_methods() if not entry.fixed_steps)
                count = f"exactly {'one step' if self.steps == 1 else f'{self.steps} steps'}"
                raise AttackConfigError(f"{self.name} takes {count}, got steps={steps}; use {more} for more")
            steps = self.steps
        if not self.takes_momentum and momentum not in (None, 0, 0.0):
            with_momentum = " or ".join(entry.name for entry in registered_attack_methods() if entry.takes_momentum)
            raise AttackConfigError(f"{self.name} has no momentum; use {with_momentum}")
        steps = self.steps if steps is None else steps
        if alpha is None:  # the paper's eps/steps; steps that are not a count are refused by AttackConfig.validate
            counted = isinstance(steps, numbers.Real) and steps >= 1
            alpha = eps / steps if counted and steps != 1 else eps  # one step: eps itself
        return steps, alpha, self.momentum if momentum is None else momentum


_REGISTRY: dict[str, AttackMethod] = {}


def register_attack_method(method: AttackMethod) -> AttackMethod:
    """Add ``method`` to the registry (a later registration of the same name replaces it); returns it."""
    plugins.check_entry_name("attack method", method.name)
    _REGISTRY[method.name] = method
    return method


def unregister_attack_method(name: str) -> None:
    """Remove the method ``name``; unknown names are ignored."""
    _REGISTRY.pop(name, None)


def attack_method_names() -> tuple[str, ...]:
    """Registered method names, in registration order (entry-point plugins included)."""
    plugins.load_plugins(plugins.ATTACKS)
    return tuple(_REGISTRY)


def registered_attack_methods() -> tuple[AttackMethod, ...]:
    """Every registered method, in registration order."""
    plugins.load_plugins(plugins.ATTACKS)
    return tuple(_REGISTRY.values())


def iterative_methods() -> tuple[str, ...]:
    """The methods whose step count a user chooses (not FGSM's one step): what ``steps`` and ``alpha`` apply to."""
    return tuple(entry.name for entry in registered_attack_methods() if not entry.fixed_steps)


def momentum_methods() -> tuple[str, ...]:
    """The methods that take a momentum (MIM): what ``momentum`` applies to."""
    return tuple(entry.name for entry in registered_attack_methods() if entry.takes_momentum)


def find_attack_method(name: object) -> AttackMethod | None:
    """The registered method ``name``, or None (``AttackConfig.validate`` names the known ones)."""
    plugins.load_plugins(plugins.ATTACKS)
    return _REGISTRY.get(name) if isinstance(name, str) else None


# The shipped methods: one line each.
register_attack_method(AttackMethod("fgsm", "one signed step of size eps", steps=1, fixed_steps=True))
register_attack_method(AttackMethod("bim", "iterative FGSM, no momentum"))
register_attack_method(AttackMethod("mim", "BIM with momentum (Dong et al.)", momentum=1.0, takes_momentum=True))
