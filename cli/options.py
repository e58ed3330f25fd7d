"""Option groups shared by the subcommands, and the one place that turns them into an :class:`AttackConfig`.

The attack's options are not declared here: each is built from its setting's declaration on
:class:`~comcloak.attacks.config.AttackConfig` (``comcloak.attacks.settings``: flag, kind, range, help, and the
commands that offer it), and :func:`attack_config_from_args` reads them back by the same declarations. ``cloak`` and
``demo`` take all of them; ``eval`` the classifier, device and attack numbers (it runs on the torch backend in fp32);
``export`` the classifier and the stand-in; ``bench`` the classifier, stand-in, steps and device. Building the
parser imports no torch (the choices come from the torch-free registry and attack configuration).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, fields
from typing import Any

from comcloak import defaults
from comcloak.attacks.config import (
    AttackConfigError,
    Declared,
    EotSettings,
    declared_settings,
    from_user_scale,
    user_range,
)
from comcloak.attacks.presets import DEFAULT_STRENGTH, PRESETS, STRENGTHS, Preset
from comcloak.attacks.settings import declared_fields
from comcloak.engine.backends.registry import PRECISIONS, backend_choices, describe_backends
from comcloak.engine.protection import Protection

PRESET_FIELDS = frozenset(item.name for item in fields(Preset))  # the settings a --strength preset sets
PRESET_ONLY = frozenset(item.name for item in fields(EotSettings))  # eval: the draws apply to its presets only


def user_scale_type(entry: Declared):
    """argparse type of a setting given on the user's scale (``--eps``/``--alpha`` on 0-255)."""
    scale = entry.setting.scale

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number on the 0-{scale:g} scale, got {text!r}") from None
        try:
            from_user_scale(entry, value)
        except AttackConfigError:
            raise argparse.ArgumentTypeError(f"must be {user_range(entry)}, got {text}") from None
        return value
    return parse


def declared_type(entry: Declared):
    """argparse type of a declared int or real setting: the kind's conversion; its range is checked where the
    configuration is made (``AttackConfig.validate``, one line, exit status 2), like the library's. Settings given
    on the user's scale (``--eps``) are checked here against the user's ceiling."""
    if entry.setting.scale != 1:
        return user_scale_type(entry)
    convert, noun = (int, "an integer") if entry.setting.kind == "int" else (float, "a number")

    def parse(text: str) -> int | float:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    parse.__name__ = noun.split()[-1]  # argparse's "invalid integer value" wording, should the message be lost
    return parse


eps_value = user_scale_type(declared_settings()["eps"])


def _int_at_least(minimum: int, what: str):
    """argparse type for integers >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {what} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {what} integer, got {text}")
        return value
    return parse


positive_int = _int_at_least(1, "positive")
non_negative_int = _int_at_least(0, "non-negative")


def _number_above(minimum: float, inclusive: bool, what: str):
    """argparse type for numbers above ``minimum`` (or equal to it when ``inclusive``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (value >= minimum if inclusive else value > minimum):
            raise argparse.ArgumentTypeError(f"expected a number {what}, got {text!r}")
        return value
    return parse


positive_float = _number_above(0, False, "above 0")
non_negative_float = _number_above(0, True, "0 or above")


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_and_help(entry: Declared, preset_flag: str | None = None, picked: bool = False,
                     **wording: str) -> tuple[Any, str]:
    """The option's default and its ``--help`` text, from the declaration.

    With ``preset_flag`` a setting the presets set defaults to None ("not given", so the preset's value wins) and
    the help shows the default preset's value when one is always ``picked`` (``cloak --strength``), else the declared
    default (``eval --strengths``, ``bench --strength``: a preset only when given). Otherwise the default is the
    field's (None for the numbers ``attack_config`` derives per attack; ``default_text`` says how). ``wording`` may
    replace the declaration's ``default_text`` and ``note`` for one command.
    """
    declared = entry.setting
    note = wording.get("note", declared.note)
    default = None
    if "default_text" in wording:
        shown = f" {wording['default_text']}"
    elif preset_flag and picked and entry.name in PRESET_FIELDS:
        shown = f": the preset's; {_shown(getattr(PRESETS[DEFAULT_STRENGTH], entry.name))} for {DEFAULT_STRENGTH}"
    elif preset_flag and entry.name in PRESET_FIELDS:
        shown = f" {_shown(entry.user_default)}, or the preset's own with {preset_flag}"
    else:
        shown = declared.default_text
        if entry.default is not MISSING:
            default = entry.default
            shown = shown or ("" if default is None or default is False else _shown(default))
        shown = f" {shown}" if shown else ""
    if preset_flag and entry.name in PRESET_FIELDS:
        default = None
    parts = "; ".join(part for part in (f"default{shown}" if shown else "", note) if part)
    return default, f"{declared.help} ({parts})" if parts else declared.help


def add_setting(group: argparse._ArgumentGroup | argparse.ArgumentParser, keyword: str, preset_flag: str | None = None,
                picked: bool = False, **override: Any) -> None:
    """Add the option of the declared setting ``keyword`` (``comcloak.attacks.config.declared_settings``); for
    ``preset_flag`` and ``picked`` see :func:`default_and_help`.

    ``override`` may set the option's ``flag`` (``bench --size`` for ``attack_size``), ``help`` (what it is, for
    this command), ``default``, and the ``default_text`` or ``note`` of its help; the rest is the declaration's.
    """
    add_declared(group, declared_settings()[keyword], preset_flag, picked, **override)


def add_declared(group: argparse._ArgumentGroup | argparse.ArgumentParser, entry: Declared,
                 preset_flag: str | None = None, picked: bool = False, **override: Any) -> None:
    """Add the option of the declared setting ``entry`` (an attack setting, or another settings dataclass's such as
    ``engine.protection.Protection``); see :func:`add_setting`."""
    declared = entry.setting
    wording = {key: override.pop(key) for key in ("default_text", "note") if key in override}
    default, text = default_and_help(entry, preset_flag, picked, **wording)
    if "help" in override:
        text = override.pop("help") + text[len(declared.help):]
    options: dict[str, Any] = {"default": override.pop("default", default)}
    if declared.kind == "flag":
        options = {"action": "store_true"}
    elif declared.kind == "choice":
        options["choices"] = declared.choice_values()
    elif declared.kind in ("int", "real"):
        options["type"] = declared_type(entry)
    if declared.metavar:
        options["metavar"] = declared.metavar
    group.add_argument(override.pop("flag", entry.flag), help=text.replace("%", "%%"), **options)


def offered(command: str, group: str = "attack") -> list[Declared]:
    """The declared settings ``command`` offers as options in ``group``, in declaration order."""
    return [entry for entry in declared_settings().values()
            if command in entry.setting.commands and entry.setting.group == group]


def add_protection_options(parser: argparse.ArgumentParser) -> None:
    """``--protect``, ``--face-preset`` and ``--face-steps`` (``cloak``, ``demo``), declared on
    :class:`~comcloak.engine.protection.Protection`."""
    group = parser.add_argument_group("protection (what the cloak protects against)")
    for entry in declared_fields(Protection):
        add_declared(group, entry)


def protection_from_args(args: argparse.Namespace):
    """The :class:`~comcloak.engine.protection.Protection` of the parsed options (a bad value: one line, exit 2)."""
    return Protection.from_settings({entry.keyword: getattr(args, entry.keyword, None)
                                     for entry in declared_fields(Protection)})


def add_classifier_options(parser: argparse.ArgumentParser, ensemble: bool = False,
                           command: str = "cloak") -> argparse._ArgumentGroup:
    """``--classifier`` (with ``ensemble``: several, comma-separated; default the --strength preset's) and its
    weights file."""
    group = parser.add_argument_group("models")
    for entry in offered(command, "models"):
        if entry.keyword == "classifier" and not ensemble:
            add_setting(group, entry.keyword, help="registered classifier")
        else:
            add_setting(group, entry.keyword, "--strength" if ensemble else None, picked=ensemble)
    return group


def add_through_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, default: str | None,
                       default_help: str) -> None:
    """``--through`` with the command's own default and its wording (``export``: what it can export)."""
    add_setting(group, "through", default=default, default_text=default_help)


def add_device_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, default: str | None = None) -> None:
    group.add_argument("--device", default=default,
                       help=f"cpu or cuda (default: {default or 'cuda when available'})")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the attack runs: device, backend, precision, the step-graph cache (cloak, demo)."""
    group = parser.add_argument_group("runtime")
    add_device_option(group)
    add_backend_options(group)
    group.add_argument("--cache-dir", metavar="DIR", default=None,
                       help="where exported step graphs and TensorRT engines are kept (default ~/.cache/comcloak)")


def add_backend_options(group: argparse._ArgumentGroup | argparse.ArgumentParser, applies: str = "") -> None:
    """``--backend`` and ``--precision`` (``applies``: which of the command's modes they apply to, for the help)."""
    group.add_argument("--backend", default=defaults.BACKEND, choices=backend_choices(),
                       help=f"{applies}{describe_backends()}; or auto, the fastest that can run here (default "
                            f"{defaults.BACKEND}). Exported graphs are exported once per attack-view size and cached")
    group.add_argument("--precision", default=defaults.PRECISION, choices=PRECISIONS,
                       help=f"{applies}{defaults.PRECISION} (default), or bf16/fp16 autocast of the classifier "
                            "(torch backends)")


def add_attack_options(parser: argparse.ArgumentParser, command: str = "cloak", preset_flag: str = "--strength",
                       overrides: dict[str, dict[str, Any]] | None = None) -> None:
    """The attack options ``command`` offers (its settings' declarations say which): ``cloak`` and ``demo`` pick a
    ``--strength`` preset first, which always applies; ``eval`` applies its ``--strengths`` when given.
    ``overrides``: :func:`add_setting`'s overrides for this command, by keyword."""
    group = parser.add_argument_group("attack")
    picked = command == "cloak"
    if picked:
        group.add_argument("--strength", default=DEFAULT_STRENGTH, choices=STRENGTHS,
                           help="preset of the numbers below (each given option wins over it): "
                                + "; ".join(preset.describe() for preset in PRESETS.values()).replace("%", "%%")
                                + f". Default {DEFAULT_STRENGTH}; measured protection in docs/RESULTS.md")
        overrides = {"through": {"note": "paper: the shipped ComModel for the --check codec"}, **(overrides or {})}
    for entry in offered(command):
        add_setting(group, entry.keyword, preset_flag, picked, **(overrides or {}).get(entry.keyword, {}))


def given_settings(args: argparse.Namespace, command: str, group: str | None = None) -> dict[str, Any]:
    """The declared settings ``command``'s options gave (None: not given), by field name (``method``); ``group``:
    only those of one ``--help`` group (``attack``, ``models``)."""
    return {entry.name: getattr(args, entry.keyword) for entry in declared_settings().values()
            if command in entry.setting.commands and group in (None, entry.setting.group)
            and getattr(args, entry.keyword, None) is not None}


def applies_to(method: str, name: str) -> bool:
    """Whether the declared setting ``name`` applies to the attack ``method`` (``momentum``: MIM only)."""
    return next(entry.setting for entry in declared_settings().values() if entry.name == name).applies_to(method)


def attack_config_from_args(args: argparse.Namespace, method: str | None = None, through: str | None = None):
    """The :class:`~comcloak.attacks.AttackConfig` of the parsed options (eps and alpha converted from 0-255 there).

    ``cloak``/``demo``: the ``--strength`` preset with every option given winning over it (``--target`` implies
    ``--targeted``); without ``--through``, the preset's stand-in, or for ``paper`` the one matched to the ``--check``
    codec. ``eval`` passes ``method`` and ``through`` for each entry of its lists: the paper's attack with its own
    numbers, each option applying to the attacks its declaration names (``--steps`` and ``--alpha`` to the iterative
    ones, ``--momentum`` to MIM, as eval's help says); otherwise an option that does not fit the attack is an error.
    """
    from comcloak.attacks import AttackConfig
    from comcloak.attacks.presets import preset_config
    from comcloak.attacks.through import matched_through_spec

    if method is not None:  # eval: one entry of its --attacks list; its --draws is for its --strengths presets
        given = {name: value for name, value in given_settings(args, "eval").items()
                 if applies_to(method, name) and name not in PRESET_ONLY}
        return AttackConfig.from_user(method=method, through=through, **given)
    given = given_settings(args, "cloak")
    if given.get("target") is not None:
        given["targeted"] = True
    if args.through is None and args.strength == "paper":
        given["through"] = matched_through_spec(args.check)
    elif args.through is None and through is not None:
        given["through"] = through
    return preset_config(args.strength, **given)


def build_classifier(args: argparse.Namespace):
    """The classifier module named by ``--classifier`` / ``--classifier-weights``."""
    from comcloak.engine.cloaker import load_classifier

    return load_classifier(args.classifier, args.classifier_weights)


def cloaker_spec(args: argparse.Namespace):
    """The :class:`~comcloak.engine.cloaker.CloakerSpec` of ``cloak``/``demo``: the attack configuration, the
    protection and the runtime options."""
    from comcloak.engine.cloaker import CloakerSpec

    return CloakerSpec(attack_config_from_args(args), backend=args.backend, device=args.device,
                       cache_dir=args.cache_dir, precision=args.precision, protection=protection_from_args(args))


def build_cloaker(args: argparse.Namespace):
    """The ``Cloaker`` of ``cloak``/``demo``, built here."""
    return cloaker_spec(args).build()
