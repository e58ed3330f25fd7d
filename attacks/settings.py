"""How an attack setting is declared, once (torch-free): its name, default, range, help and CLI option live on the
field of :class:`~comcloak.attacks.config.AttackConfig` (or its nested :class:`~comcloak.attacks.config.EotSettings`)
that holds it, and everything else derives from there: the configuration's validation, the ``comcloak`` options
(``comcloak.cli.options``), ``Cloaker``'s keywords, ``preset_config``, ``comcloak bench`` and ``comcloak eval``.

Adding a setting is one edit plus its use::

    stride: int = setting(1, "pixels between ...", kind="int", low=1, commands=("cloak",))

gives ``AttackConfig.stride`` validated against ``low``, ``--stride`` on ``comcloak cloak``/``demo`` with that help,
and ``Cloaker(stride=2)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from comcloak.errors import UserError

SETTING = "comcloak.setting"  # the key of a field's metadata that holds its Setting
KINDS = ("choice", "int", "real", "pair", "flag", "text")


class AttackConfigError(UserError, ValueError):
    """A user-supplied attack parameter is out of range or inconsistent."""


def require_integer(name: str, value: Any) -> None:
    """Refuse ``value`` unless it is an integer (a bool or a float is not a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AttackConfigError(f"{name} must be an integer, got {value!r}")


def require_finite(name: str, *values: Any) -> None:
    """Refuse ``values`` unless each is a finite real number: NaN and infinity slip through range comparisons."""
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise AttackConfigError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class Setting:
    """One setting's declaration (a field's ``metadata[SETTING]``; build it with :func:`setting`).

    Attributes:
        help: what it is, for ``--help`` (without the default, which the CLI words per command).
        kind: ``choice`` (one of ``choices``), ``int``, ``real``, ``pair`` (an increasing (low, high) of reals),
            ``flag`` (a bool) or ``text``; None values pass when the field's default is None.
        low, high: the range on the configuration's scale (None: unbounded); ``low_open`` excludes ``low``.
        range_text: how an error words the range ("at least 1"); default: from ``low`` and ``high``.
        choices: the values of a ``choice``, or a function of no arguments that lists them when asked (a registry's
            names: a plugin or a test may register more after the declaration).
        keyword: the name ``Cloaker(...)``, ``preset_config(...)`` and the option take (default: the field's name;
            ``method`` is ``attack``); the CLI flag is ``--`` + keyword with dashes.
        commands: the commands that offer it as an option: ``cloak`` (cloak and demo), ``eval``, ``bench``.
        group: the ``--help`` group of the option (``attack`` or ``models``).
        metavar: the option's metavar (default argparse's).
        user_default: the default on the user's scale when neither the field nor a preset gives one (eps 5).
        default_text: how ``--help`` words a default that is derived ("eps/steps").
        note: appended to the option's default in ``--help`` ("fgsm takes one").
        scale: the user's scale over the configuration's (eps, alpha: 255, given on 0-255).
        user_high: the ceiling on the user's scale (eps, alpha: ``defaults.MAX_EPS``).
        methods: the attacks it applies to (``comcloak eval`` drops it for the others), or a function of no
            arguments that lists them (from the attack-method registry); empty: all.
    """

    help: str
    kind: str = "text"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    range_text: str = ""
    choices: tuple[str, ...] | Callable[[], Sequence[str]] = ()
    keyword: str = ""
    commands: tuple[str, ...] = ()
    group: str = "attack"
    metavar: str | None = None
    user_default: Any = None
    default_text: str = ""
    note: str = ""
    scale: float = 1.0
    user_high: float | None = None
    methods: tuple[str, ...] | Callable[[], Sequence[str]] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:  # a declaration error, not a user's: the project's own
            raise TypeError(f"Setting kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def applies_to(self, method: str) -> bool:
        """Whether this setting applies to the attack ``method``."""
        methods = self.methods() if callable(self.methods) else self.methods
        return not methods or method in methods

    def choice_values(self) -> tuple[str, ...]:
        """The values a ``choice`` takes now."""
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def describe_range(self) -> str:
        """The range in words: ``in (0, 1]``, ``at least 1``, ``in [0, 2]``."""
        if self.range_text:
            return self.range_text
        if self.high is None:
            return f"{'above' if self.low_open else 'at least'} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def in_range(self, value: float) -> bool:
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or value <= self.high

    def check(self, name: str, value: Any) -> None:
        """Refuse ``value`` unless it is of this kind and in range (one line, naming ``name``)."""
        if self.kind == "choice":
            values = self.choice_values()
            if value not in values:  # "unknown attack 'pgd'": the user's word for the setting
                raise AttackConfigError(f"unknown {self.keyword or name} {value!r}; available: {', '.join(values)}")
            return
        if self.kind == "int":
            require_integer(name, value)
        elif self.kind == "real":
            require_finite(name, value)
        elif self.kind == "pair":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
                raise AttackConfigError(f"{name} must be a (low, high) pair, got {value!r}")
            require_finite(name, *value)
            if not (value[0] <= value[1] and self.in_range(value[0]) and self.in_range(value[1])):
                raise AttackConfigError(f"{name} must be {self.describe_range()}, got {tuple(value)}")
            return
        else:
            return
        if not self.in_range(value):
            raise AttackConfigError(f"{name} must be {self.describe_range()}, got {value}")


def setting(default: Any = MISSING, help: str = "", **declared: Any) -> Any:  # noqa: A002 - argparse's word
    """A dataclass field declared as a setting: ``default`` (MISSING: required, or a ``default_factory=`` in
    ``declared``) and the :class:`Setting` of ``help`` and ``declared``."""
    factory = declared.pop("default_factory", MISSING)
    metadata = {SETTING: Setting(help, **declared)}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Declared:
    """A declared setting as the CLI, ``Cloaker`` and ``preset_config`` see it."""

    name: str  # the field's name (``method``)
    keyword: str  # the user's name (``attack``)
    owner: type  # AttackConfig or EotSettings
    setting: Setting
    default: Any  # the field's default, MISSING when required

    @property
    def flag(self) -> str:
        """The CLI option (``--attack-size``)."""
        return "--" + self.keyword.replace("_", "-")

    @property
    def user_default(self) -> Any:
        """The default on the user's scale: the declared one, else the field's (None when there is neither)."""
        if self.setting.user_default is not None:
            return self.setting.user_default
        return None if self.default is MISSING else self.default


def declared_fields(cls: type) -> list[Declared]:
    """The settings ``cls`` declares, in field order."""
    found = []
    for item in fields(cls):
        if SETTING in item.metadata:
            declaration: Setting = item.metadata[SETTING]
            default = item.default if item.default is not MISSING else (
                item.default_factory() if item.default_factory is not MISSING else MISSING)
            found.append(Declared(item.name, declaration.keyword or item.name, cls, declaration, default))
    return found


def check_declared(instance: Any) -> None:
    """Validate every declared field of a settings dataclass against its declaration (None passes where the
    field's default is None)."""
    for entry in declared_fields(type(instance)):
        value = getattr(instance, entry.name)
        if value is None and entry.default is None:
            continue
        entry.setting.check(entry.name, value)
