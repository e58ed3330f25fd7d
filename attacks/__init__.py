"""comcloak.attacks: the one attack loop (FGSM/BIM/MIM as configurations), stand-ins, metrics, protocols."""

from comcloak.attacks.loop import (
    ATTACK_METHODS,
    AttackConfig,
    AttackConfigError,
    attack_config,
    loss_and_gradient,
    paper_targets,
    run_attack,
)
from comcloak.attacks.metrics import linf, psnr, ssim
from comcloak.attacks.through import ThroughSpecError, make_through

__all__ = [
    "ATTACK_METHODS",
    "AttackConfig",
    "AttackConfigError",
    "ThroughSpecError",
    "attack_config",
    "linf",
    "loss_and_gradient",
    "make_through",
    "paper_targets",
    "psnr",
    "run_attack",
    "ssim",
]
