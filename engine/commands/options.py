"""Option groups shared by the subcommands, and the one place that turns them into an :class:`AttackConfig`.

Each group is added by the subcommands that honour every option in it, so no subcommand offers a flag it refuses:
``cloak`` and ``demo`` take all of them; ``eval`` the classifier, device and attack options (it runs on the torch
backend in fp32); ``export`` the classifier and the stand-in; ``bench`` the classifier, stand-in, steps and device.
Building the parser imports no torch (the choices come from the torch-free registry and attack configuration).
"""

from __future__ import annotations

import argparse

from comcloak import defaults
from comcloak.attacks.config import ATTACK_METHODS
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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_classifier_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("models")
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
    group.add_argument("--backend", default=defaults.BACKEND, choices=backend_choices(),
                       help=f"{describe_backends()}; or auto, the fastest that can run here (default "
                            f"{defaults.BACKEND}). Exported graphs are exported once per attack-view size and cached")
    group.add_argument("--precision", default=defaults.PRECISION, choices=PRECISIONS,
                       help=f"{defaults.PRECISION} (default), or bf16/fp16 autocast of the classifier (torch backends)")
    group.add_argument("--cache-dir", metavar="DIR", default=None,
                       help="where exported step graphs and TensorRT engines are kept (default ~/.cache/comcloak)")


def add_steps_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, default: int | None = None) -> None:
    group.add_argument("--steps", type=positive_int, default=default,
                       help=f"iterations of bim/mim (default {defaults.STEPS}; fgsm takes one)")


def add_attack_options(parser: argparse.ArgumentParser, single_attack: bool = True) -> None:
    """The attack's numbers; with ``single_attack`` also the method, stand-in, target and attack size (``eval``
    takes several methods and stand-ins as lists of its own)."""
    group = parser.add_argument_group("attack")
    if single_attack:
        group.add_argument("--attack", default=defaults.ATTACK, choices=ATTACK_METHODS,
                           help=f"default: {defaults.ATTACK}")
        add_through_option(group, None, "the shipped ComModel for the --check codec")
    group.add_argument("--eps", type=eps_value, default=defaults.EPS,
                       help=f"L-inf budget on the 0-255 scale (default {defaults.EPS:g})")
    add_steps_option(group)
    group.add_argument("--alpha", type=eps_value, default=None, help="step size, 0-255 scale (default eps/steps)")
    group.add_argument("--momentum", type=float, default=None, help="MIM momentum mu (default 1; MIM only)")
    group.add_argument("--targeted", action="store_true",
                       help="aim at a class: --target, or the paper's (clean + 500) mod 1000")
    if single_attack:
        group.add_argument("--target", type=int, default=None, help="target class index (implies --targeted)")
        group.add_argument("--attack-size", type=positive_int, default=defaults.ATTACK_SIZE,
                           help=f"shorter side of the attack view in pixels (default {defaults.ATTACK_SIZE})")
    group.add_argument("--seed", type=int, default=defaults.SEED,
                       help=f"seed for random stand-in picks (default {defaults.SEED})")


def attack_config_from_args(args: argparse.Namespace, method: str | None = None, through: str | None = None):
    """The :class:`~comcloak.attacks.AttackConfig` of the parsed options (eps and alpha converted from 0-255 there).

    ``--target`` implies ``--targeted``; without ``--through``, the stand-in matched to the ``--check`` codec. With
    ``method`` (and ``through``) given, as ``eval`` does for each entry of its lists, ``--steps`` and ``--alpha``
    apply to the iterative attacks and ``--momentum`` to MIM (as eval's help says); otherwise every option applies
    as given, and one that does not fit the attack is an error.
    """
    from comcloak.attacks import AttackConfig
    from comcloak.attacks.through import matched_through_spec

    per_method = method is not None
    method = method or args.attack
    iterative = method != "fgsm" or not per_method
    target = getattr(args, "target", None)
    return AttackConfig.from_user(
        method=method,
        eps=args.eps,
        steps=args.steps if iterative else None,
        alpha=args.alpha if iterative else None,
        momentum=args.momentum if method == "mim" or not per_method else None,
        targeted=args.targeted or target is not None,
        target=target,
        through=through or args.through or matched_through_spec(args.check),
        classifier=args.classifier,
        classifier_weights=args.classifier_weights,
        attack_size=getattr(args, "attack_size", defaults.ATTACK_SIZE),
        seed=args.seed,
    )


def build_classifier(args: argparse.Namespace):
    """The classifier module named by ``--classifier`` / ``--classifier-weights``."""
    from comcloak.engine.cloaker import load_classifier

    return load_classifier(args.classifier, args.classifier_weights)


def build_cloaker(args: argparse.Namespace):
    """The ``Cloaker`` of ``cloak``/``demo``: the attack configuration and the runtime options."""
    from comcloak.engine.cloaker import Cloaker

    return Cloaker(attack_config_from_args(args), backend=args.backend, device=args.device, cache_dir=args.cache_dir,
                   precision=args.precision)
