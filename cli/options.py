"""Option groups shared by the subcommands, and the one place that turns them into an :class:`AttackConfig`.

Each group is added by the subcommands that honour every option in it, so no subcommand offers a flag it refuses:
``cloak`` and ``demo`` take all of them; ``eval`` the classifier, device and attack options (it runs on the torch
backend in fp32); ``export`` the classifier and the stand-in; ``bench`` the classifier, stand-in, steps and device.
Building the parser imports no torch (the choices come from the torch-free registry and attack configuration).
"""

from __future__ import annotations

import argparse
import math

from comcloak import defaults
from comcloak.attacks.config import ATTACK_METHODS, LOSSES
from comcloak.attacks.presets import DEFAULT_STRENGTH, PRESETS, STRENGTHS
from comcloak.engine.backends.registry import PRECISIONS, backend_choices, describe_backends

THROUGH_HELP = ("stand-in for the compressor: none, diffjpeg:Q, comodel:CODEC, comodel:PATH, comodel-cubic:CODEC (the "
                "trained cubic rounding), 'mix:A|B', 'eot:A|B'")


def eps_value(text: str) -> float:
    """argparse type for ``--eps``/``--alpha`` on the 0–255 scale."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number on the 0-255 scale, got {text!r}") from None
    if not 0 < value <= defaults.MAX_EPS:
        raise argparse.ArgumentTypeError(f"must be in (0, {defaults.MAX_EPS:g}] on the 0-255 scale, got {text}")
    return value


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


def add_classifier_options(parser: argparse.ArgumentParser, ensemble: bool = False) -> argparse._ArgumentGroup:
    """``--classifier`` (with ``ensemble``: several, comma-separated; default the --strength preset's) and its
    weights file."""
    group = parser.add_argument_group("models")
    if ensemble:
        group.add_argument("--classifier", default=None,
                           help=f"surrogate classifier(s) attacked, comma-separated for an ensemble whose loss is "
                                f"averaged (default: the --strength preset's; {PRESETS[DEFAULT_STRENGTH].classifier} "
                                f"for {DEFAULT_STRENGTH}; pretrained, offline)")
    else:
        group.add_argument("--classifier", default=defaults.CLASSIFIER,
                           help=f"registered classifier (default: {defaults.CLASSIFIER}, pretrained, offline)")
    group.add_argument("--classifier-weights", metavar="PATH",
                       help="weights file for the classifier (required for resnet50; safetensors or state dict)")
    return group


def add_through_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, default: str | None,
                       default_help: str) -> None:
    group.add_argument("--through", default=default, help=f"{THROUGH_HELP} (default: {default_help})")


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


def add_steps_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, default: int | None = None) -> None:
    group.add_argument("--steps", type=positive_int, default=default,
                       help=f"iterations of bim/mim (default {defaults.STEPS}, or the preset's own with --strength or "
                            "--strengths; fgsm takes one)")


def add_attack_options(parser: argparse.ArgumentParser, single_attack: bool = True) -> None:
    """The attack's numbers; with ``single_attack`` also the method, stand-in, target and attack size (``eval``
    takes several methods and stand-ins as lists of its own)."""
    group = parser.add_argument_group("attack")
    if single_attack:
        group.add_argument("--strength", default=DEFAULT_STRENGTH, choices=STRENGTHS,
                           help="preset of the numbers below (each given option wins over it): "
                                + "; ".join(preset.describe() for preset in PRESETS.values()).replace("%", "%%")
                                + f". Default {DEFAULT_STRENGTH}; measured protection in docs/RESULTS.md")
        group.add_argument("--attack", default=None, choices=ATTACK_METHODS,
                           help=f"default: the preset's ({defaults.ATTACK})")
        add_through_option(group, None, "the preset's, comodel:jpeg:50; paper: the shipped ComModel for the "
                                        "--check codec")
        group.add_argument("--eps", type=eps_value, default=None,
                           help="L-inf budget on the 0-255 scale (default: the preset's; 5 for balanced)")
        group.add_argument("--steps", type=positive_int, default=None,
                           help="iterations of bim/mim (default: the preset's; 20 for balanced; fgsm takes one)")
        group.add_argument("--draws", type=non_negative_int, default=None,
                           help="random draws per step of the platform (downscale, codec stand-in) and the "
                                "attacker's view (rescale, crop, flip, shift) the loss is averaged over; 0: none, "
                                "the paper's attack (default: the preset's; 2 for balanced)")
        group.add_argument("--loss", default=None, choices=LOSSES,
                           help="ce (cross-entropy) or margin (push the clean label out of the top-5) (default: "
                                "the preset's; margin for balanced)")
    else:
        group.add_argument("--eps", type=eps_value, default=None,
                           help=f"L-inf budget on the 0-255 scale (default {defaults.EPS:g}, or the preset's own "
                                "with --strengths)")
        add_steps_option(group)
    group.add_argument("--alpha", type=eps_value, default=None, help="step size, 0-255 scale (default eps/steps)")
    group.add_argument("--momentum", type=float, default=None, help="MIM momentum mu (default 1; MIM only)")
    group.add_argument("--targeted", action="store_true",
                       help="aim at a class: --target, or the paper's (clean + 500) mod 1000")
    if single_attack:
        group.add_argument("--target", type=int, default=None, help="target class index (implies --targeted)")
        group.add_argument("--attack-size", type=positive_int, default=None,
                           help="shorter side of the working view the cloak is computed on, in pixels (default: "
                                "the preset's; 288 for balanced)")
    group.add_argument("--seed", type=int, default=defaults.SEED,
                       help=f"seed for the random draws and stand-in picks (default {defaults.SEED})")


def attack_config_from_args(args: argparse.Namespace, method: str | None = None, through: str | None = None):
    """The :class:`~comcloak.attacks.AttackConfig` of the parsed options (eps and alpha converted from 0-255 there).

    ``cloak``/``demo``: the ``--strength`` preset with every option given winning over it (``--target`` implies
    ``--targeted``); without ``--through``, the preset's stand-in, or for ``paper`` the one matched to the ``--check``
    codec. ``eval`` passes ``method`` and ``through`` for each entry of its lists: the paper's attack with its own
    numbers, ``--steps`` and ``--alpha`` applying to the iterative attacks and ``--momentum`` to MIM (as eval's help
    says); otherwise an option that does not fit the attack is an error.
    """
    from comcloak.attacks import AttackConfig
    from comcloak.attacks.presets import preset_config
    from comcloak.attacks.through import matched_through_spec

    if method is not None:  # eval: one entry of its --attacks list
        iterative = method != "fgsm"
        return AttackConfig.from_user(
            method=method, eps=args.eps, steps=args.steps if iterative else None,
            alpha=args.alpha if iterative else None, momentum=args.momentum if method == "mim" else None,
            targeted=args.targeted, through=through, classifier=args.classifier,
            classifier_weights=args.classifier_weights, attack_size=defaults.ATTACK_SIZE, seed=args.seed,
        )
    target = getattr(args, "target", None)
    if args.through is None and args.strength == "paper":
        through = matched_through_spec(args.check)
    return preset_config(
        args.strength, method=args.attack, eps=args.eps, steps=args.steps, alpha=args.alpha, momentum=args.momentum,
        targeted=args.targeted or target is not None, target=target, through=args.through or through,
        classifier=args.classifier, classifier_weights=args.classifier_weights, attack_size=args.attack_size,
        seed=args.seed, loss=args.loss, draws=args.draws,
    )


def build_classifier(args: argparse.Namespace):
    """The classifier module named by ``--classifier`` / ``--classifier-weights``."""
    from comcloak.engine.cloaker import load_classifier

    return load_classifier(args.classifier, args.classifier_weights)


def cloaker_spec(args: argparse.Namespace):
    """The :class:`~comcloak.engine.cloaker.CloakerSpec` of ``cloak``/``demo``: the attack configuration and the
    runtime options."""
    from comcloak.engine.cloaker import CloakerSpec

    return CloakerSpec(attack_config_from_args(args), backend=args.backend, device=args.device,
                       cache_dir=args.cache_dir, precision=args.precision)


def build_cloaker(args: argparse.Namespace):
    """The ``Cloaker`` of ``cloak``/``demo``, built here."""
    return cloaker_spec(args).build()
