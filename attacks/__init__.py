"""comcloak.attacks: the one attack loop (FGSM/BIM/MIM as configurations), stand-ins, metrics, protocols.

The configuration (:mod:`comcloak.attacks.config`) and the registries of attack methods
(:mod:`comcloak.attacks.methods`) and losses (:mod:`comcloak.attacks.loss_registry`) are torch-free and imported
eagerly; the loop, the stand-ins and the metrics need torch and are imported on first use, so the CLI's parser can
name the attack methods and losses without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from comcloak.attacks.config import AttackConfig, AttackConfigError, attack_config
from comcloak.attacks.loss_registry import LossInfo, loss_names, register_loss
from comcloak.attacks.methods import AttackMethod, attack_method_names, register_attack_method

_LAZY = {
    "ATTACK_METHODS": "config",  # the registered names when asked for (comcloak.attacks.methods)
    "descent_gradient": "loop", "paper_targets": "loop", "run_attack": "loop", "run_attack_result": "loop",
    "AttackResult": "stopping",
    "linf": "metrics", "psnr": "metrics", "ssim": "metrics",
    "ThroughInfo": "through", "ThroughSpecError": "through", "make_through": "through",
    "register_through": "through",
    "attack_succeeded": "success",
}

__all__ = [
    "AttackConfig", "AttackConfigError", "AttackMethod", "LossInfo", "attack_config", "attack_method_names",
    "loss_names", "register_attack_method", "register_loss", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
