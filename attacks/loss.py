"""The losses the attack descends, on ``w``-encoded goals (docs/DESIGN.md §2).

A goal is encoded per image and surrogate as ``w`` (..., K): the one-hot target class (targeted) or minus the one-hot
clean label (untargeted), :func:`goal_weights`. Every loss here is *descended*, so one update rule and one exported
graph serve both modes:

* ``ce`` — ``-sum(w * log_softmax(z))``: the cross-entropy of the target (targeted) or minus that of the clean label
  (untargeted), the paper's loss.
* ``margin`` — aimed at privacy rather than top-1: untargeted, ``z_clean - z_(5)``, the clean logit minus the 5th
  largest other logit, so descending it pushes the clean class out of the top-5; targeted, ``max_other z - z_target``
  (Carlini & Wagner's margin). Floored at ``-MARGIN_KAPPA``: an image already that far past the goal stops pulling.
* ``identity`` — for "classifiers" whose logits are similarities to a gallery (the face cloak's
  :class:`comcloak.attacks.faces.view.IdentityView`: cosine of the face's embedding to clean embeddings):
  ``-sum(w * z)``, the similarity to the clean identity (untargeted, descended: away from it) or minus that to the
  target identity (targeted: towards a decoy).

:func:`loss_gradient` is each loss's gradient with respect to the logits, written out by hand for the exported graph
(which has no autograd); a test checks it against autograd. Both dispatch through the registry
(:mod:`comcloak.attacks.loss_registry`): a new loss is one :class:`Loss` and one ``register_loss`` line
(``tests/recipes/test_add_loss.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from comcloak.attacks.loss_registry import get_loss

MARGIN_TOP = 5  # untargeted margin: out of the top-5 (the hide@5 the platform protocol reports)
MARGIN_KAPPA = 5.0  # logits past the goal at which an image stops pulling
_MASK = 1e4  # subtracted from the goal's logit to leave it out of the ranking of the others


def goal_weights(goal: torch.Tensor, num_classes: int, targeted: bool, dtype: torch.dtype = torch.float32):
    """``w`` for ``goal`` labels of any shape: one-hot (targeted) or its negative (untargeted); shape ``goal.shape +
    (num_classes,)``."""
    one_hot = F.one_hot(goal, num_classes).to(dtype)
    return one_hot if targeted else -one_hot


def _margin_parts(logits: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sign, goal logit, ranked other logit): sign +1 targeted, -1 untargeted."""
    sign = w.sum(dim=-1)
    goal_logit = (w.abs() * logits).sum(dim=-1)
    values = (logits - _MASK * w.abs()).topk(MARGIN_TOP, dim=-1).values
    other = torch.where(sign > 0, values[..., 0], values[..., MARGIN_TOP - 1])
    return sign, goal_logit, other


def _ce_value(logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return -(w * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def _ce_gradient(logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1) * w.sum(dim=-1, keepdim=True) - w


def _margin_value(logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    sign, goal_logit, other = _margin_parts(logits, w)
    return (sign * (other - goal_logit)).clamp_min(-MARGIN_KAPPA)


def _margin_gradient(logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    sign, goal_logit, other = _margin_parts(logits, w)
    active = ((sign * (other - goal_logit)) > -MARGIN_KAPPA).to(logits.dtype)
    # The ranked other class, found by value (no Range/ScatterND in the exported graph; ties have measure zero).
    other_hot = ((logits - _MASK * w.abs()) == other.unsqueeze(-1)).to(logits.dtype)
    return (sign * active).unsqueeze(-1) * (other_hot - w.abs())


def _identity_value(logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return -(w * logits).sum(dim=-1)


def _identity_gradient(logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return -w.expand_as(logits).to(logits.dtype)


@dataclass(frozen=True)
class Loss:
    """One loss on ``w``-encoded goals: ``value`` (logits, w (..., K) -> (...), differentiable by autograd) and
    ``gradient``, d value / d logits written out by hand (the exported graph's loss VJP): (..., K)."""

    value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    gradient: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# Named in comcloak.attacks.loss_registry (``--loss ce`` / ``--loss margin`` / ``identity``).
CROSS_ENTROPY = Loss(_ce_value, _ce_gradient)
MARGIN = Loss(_margin_value, _margin_gradient)
IDENTITY = Loss(_identity_value, _identity_gradient)


def per_image_loss(logits: torch.Tensor, w: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """The loss of each row: logits and w (..., K) -> (...). Differentiable by autograd."""
    return get_loss(kind).load().value(logits, w)


def loss_gradient(logits: torch.Tensor, w: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """d per_image_loss / d logits, by hand (the exported graph's loss VJP): (..., K)."""
    return get_loss(kind).load().gradient(logits, w)
