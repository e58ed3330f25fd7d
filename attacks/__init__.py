"""comcloak.attacks: the one attack loop (FGSM/BIM/MIM as configurations), stand-ins, metrics, protocols.

The configuration (:mod:`comcloak.attacks.config`) is torch-free and imported eagerly; the loop, the stand-ins and
the metrics need torch and are imported on first use, so the CLI's parser can name the attack methods without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from comcloak.attacks.config import ATTACK_METHODS, AttackConfig, AttackConfigError, attack_config

_LAZY = {
    "loss_and_gradient": "loop", "paper_targets": "loop", "run_attack": "loop",
    "linf": "metrics", "psnr": "metrics", "ssim": "metrics",
    "ThroughSpecError": "through", "make_through": "through",
    "attack_succeeded": "success",
}

__all__ = ["ATTACK_METHODS", "AttackConfig", "AttackConfigError", "attack_config", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
