"""Argument groups and validation shared by the subcommands that cloak (``cloak``, ``demo``, ``eval``)."""

from __future__ import annotations

import argparse

from comcloak.engine.backends.registry import PRECISIONS, backend_choices, describe_backends

MAX_EPS = 64.0  # on the 0-255 scale; beyond this a change is a visible edit, not a cloak


def eps_value(text: str) -> float:
    """argparse type for ``--eps``/``--alpha`` on the 0–255 scale."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number on the 0-255 scale, got {text!r}") from None
    if not 0 < value <= MAX_EPS:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_EPS:g}] on the 0-255 scale, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--classifier", default="efficientnet_lite0",
                       help="registered classifier (default: efficientnet_lite0, pretrained, offline)")
    group.add_argument("--classifier-weights", metavar="PATH",
                       help="weights file for the classifier (required for resnet50; safetensors or state dict)")
    group.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    group.add_argument("--backend", default="torch", choices=backend_choices(),
                       help=f"{describe_backends()}; or auto, the fastest that can run here (default torch). "
                            "Exported graphs are exported once per attack-view size and cached")
    group.add_argument("--precision", default="fp32", choices=PRECISIONS,
                       help="fp32 (default), or bf16/fp16 autocast of the classifier (torch backends)")
    group.add_argument("--cache-dir", metavar="DIR", default=None,
                       help="where exported step graphs and TensorRT engines are kept (default ~/.cache/comcloak)")


def add_attack_options(parser: argparse.ArgumentParser, single_attack: bool = True) -> None:
    group = parser.add_argument_group("attack")
    if single_attack:
        group.add_argument("--attack", default="mim", choices=("fgsm", "bim", "mim"), help="default: mim")
        group.add_argument("--through", default=None,
                           help="stand-in for the compressor: none, diffjpeg:Q, comodel:CODEC, comodel:PATH, "
                                "comodel-cubic:CODEC, 'mix:A|B', 'eot:A|B' (default: the shipped ComModel for the "
                                "--check codec)")
    group.add_argument("--eps", type=eps_value, default=5.0, help="L-inf budget on the 0-255 scale (default 5)")
    group.add_argument("--steps", type=positive_int, default=None,
                       help="iterations of bim/mim (default 10; fgsm takes one)")
    group.add_argument("--alpha", type=eps_value, default=None, help="step size, 0-255 scale (default eps/steps)")
    group.add_argument("--momentum", type=float, default=None, help="MIM momentum mu (default 1; MIM only)")
    group.add_argument("--targeted", action="store_true",
                       help="aim at a class: --target, or the paper's (clean + 500) mod 1000")
    if single_attack:
        group.add_argument("--target", type=int, default=None, help="target class index (implies --targeted)")
        group.add_argument("--attack-size", type=positive_int, default=224,
                           help="shorter side of the attack view in pixels (default 224)")
    group.add_argument("--seed", type=int, default=0, help="seed for random stand-in picks (default 0)")


def build_classifier(args: argparse.Namespace):
    """The classifier module named by ``--classifier`` / ``--classifier-weights``."""
    from comcloak.engine.cloaker import load_classifier

    return load_classifier(args.classifier, args.classifier_weights)


def build_cloaker(args: argparse.Namespace):
    from comcloak.engine.cloaker import Cloaker, default_through

    targeted = args.targeted or args.target is not None
    return Cloaker(
        classifier=args.classifier,
        classifier_weights=args.classifier_weights,
        through=args.through or default_through(args.check),
        attack=args.attack,
        eps=args.eps,
        steps=args.steps,
        alpha=args.alpha,
        momentum=args.momentum,
        targeted=targeted,
        target=args.target,
        attack_size=args.attack_size,
        backend=args.backend,
        device=args.device,
        seed=args.seed,
        cache_dir=args.cache_dir,
        precision=args.precision,
    )
