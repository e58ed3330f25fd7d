"""The one iterative attack loop of ComReAdv (docs/DESIGN.md §2); FGSM, BIM and MIM are configurations of it.

References:
    Goodfellow et al., "Explaining and Harnessing Adversarial Examples" (FGSM), ICLR 2015.
    Kurakin et al., "Adversarial examples in the physical world" (BIM), ICLR-W 2017.
    Dong et al., "Boosting Adversarial Attacks with Momentum" (MIM), CVPR 2018.
    Wang et al., "Towards Compression-Resistant Privacy-Preserving Photo Sharing on Social Networks" (ComReAdv),
    MobiHoc 2020: the same loop, with the gradient taken through a differentiable stand-in ``T`` for the
    compressor.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from comcloak import kernels
from comcloak.attacks.config import AttackConfig

logger = logging.getLogger(__name__)

PAPER_TARGET_OFFSET = 500


def paper_targets(clean_labels: torch.Tensor, num_classes: int = 1000) -> torch.Tensor:
    """The paper's targeted default: target = (clean top-1 + 500) mod num_classes."""
    return (clean_labels + PAPER_TARGET_OFFSET) % num_classes


def loss_and_gradient(
    classifier: nn.Module, through: nn.Module, x: torch.Tensor, labels: torch.Tensor, loss_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``classifier(through(x))`` against ``labels`` and its gradient with respect to ``x``.

    The loss is summed over the batch so that each image's gradient does not depend on the batch size. With an
    expectation stand-in (``eot:``, whose output stacks ``through.copies`` transformed batches) it is the mean over
    the transformations, and the logits returned are their mean. ``loss_scale`` multiplies the loss before the
    backward pass and divides the gradient after it: under fp16 autocast it keeps small gradients from flushing to
    zero (the update only uses the gradient's direction and per-image scale, so this changes nothing else).

    Returns:
        ``(loss, gradient, logits)``: scalar loss, gradient shaped like ``x``, logits ``(N, classes)``.
    """
    x = x.detach().requires_grad_(True)
    # An expectation stand-in (eot:) returns `copies` transformed batches stacked: the loss is their mean.
    copies = getattr(through, "copies", 1)
    with torch.enable_grad():
        logits = classifier(through(x))
        loss = F.cross_entropy(logits, labels.repeat(copies), reduction="sum") / copies
        (gradient,) = torch.autograd.grad(loss * loss_scale if loss_scale != 1.0 else loss, x)
    if loss_scale != 1.0:
        gradient = gradient / loss_scale
    return loss.detach(), gradient, logits.detach().view(copies, *labels.shape, -1).mean(0)


def attack_update(
    x: torch.Tensor,
    momentum: torch.Tensor,
    gradient: torch.Tensor,
    config: AttackConfig,
    lower: torch.Tensor,
    upper: torch.Tensor,
    fused: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of the loop: ``m = μ·m + g / mean(|g|)``, ``x = clip(x ± α·sign(m), lower, upper)``.

    ``lower``/``upper`` are ``max(x0 - eps, 0)`` and ``min(x0 + eps, 1)``; + untargeted, − targeted. The maths is
    ``comcloak.kernels.attack_update_reference``; ``fused`` runs it as the fused CUDA kernel instead when the
    tensors are on a GPU and the kernel library is built (``comcloak.kernels``), and as the reference otherwise.
    Returns ``(x_next, m_next)``.
    """
    step = (-1.0 if config.targeted else 1.0) * config.alpha
    if fused:
        return kernels.attack_update(x, momentum, gradient, lower, upper, step, config.momentum)
    return kernels.attack_update_reference(x, momentum, gradient, lower, upper, step, config.momentum)


def run_attack(
    classifier: nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor,
    config: AttackConfig,
    through: nn.Module | None = None,
    *,
    fused_update: bool = False,
    loss_scale: float = 1.0,
) -> torch.Tensor:
    """Run the attack loop of docs/DESIGN.md §2 and return the adversarial images.

    ::

        x = x0; m = 0
        repeat steps:
            g = ∇x CE(C(T(x)), y)
            m = μ·m + g / mean(|g|)
            x = clip(x ± α·sign(m), x0 − ε, x0 + ε, 0, 1)      # + untargeted, − targeted

    Args:
        classifier: maps [0, 1] RGB NCHW to logits; it normalises its input itself.
        x0: clean images, float NCHW in [0, 1].
        labels: ``(N,)`` int64 — the clean labels (untargeted) or the target classes (targeted).
        config: see :func:`attack_config`.
        through: the differentiable stand-in ``T`` for the compressor (identity when None): a ComModel,
            diff-JPEG or a random mixture of several.
        fused_update: run each update as the fused CUDA kernel when on a GPU (:func:`attack_update`). Default False.
        loss_scale: loss scaling for fp16 autocast (:func:`loss_and_gradient`). Default 1.

    The loop never synchronises with the host, so it can be captured whole in a CUDA graph
    (``comcloak.engine.backends.CudaGraphTorchRunner``).

    Returns:
        Adversarial images, float NCHW in [0, 1], with ``|x - x0|∞ ≤ eps``.

    Example:
        >>> cfg = attack_config("mim", eps=5 / 255)
        >>> x_adv = run_attack(classifier, x0, clean_labels, cfg, through=DiffJPEG(50))
    """
    if x0.dim() != 4 or x0.shape[1] != 3:
        raise ValueError(f"x0 must be an RGB batch shaped (N, 3, H, W), got {tuple(x0.shape)}")
    if labels.shape != (x0.shape[0],):
        raise ValueError(f"labels must be shaped ({x0.shape[0]},), got {tuple(labels.shape)}")
    through = nn.Identity() if through is None else through
    x0 = x0.detach()
    lower = (x0 - config.eps).clamp_min(0.0)
    upper = (x0 + config.eps).clamp_max(1.0)
    x = x0.clone()
    momentum = torch.zeros_like(x0)
    debug = logger.isEnabledFor(logging.DEBUG)  # loss.item() waits for the device: only when asked for
    for step in range(config.steps):
        loss, gradient, _ = loss_and_gradient(classifier, through, x, labels, loss_scale)
        x, momentum = attack_update(x, momentum, gradient, config, lower, upper, fused_update)
        if debug:
            logger.debug("attack step %d/%d loss %.4f", step + 1, config.steps, loss.item())
    return x.detach()
