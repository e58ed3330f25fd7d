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

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from comcloak import kernels
from comcloak.attacks.budget import budget_at, texture_budget
from comcloak.attacks.config import AttackConfig
from comcloak.attacks.eot import Draw, DrawSampler, apply_draw
from comcloak.attacks.loss import goal_weights, per_image_loss
from comcloak.attacks.stopping import AttackResult, StopTracker, goal_margins
from comcloak.attacks.through import ExpectationThrough, RandomChoiceThrough
from comcloak.defaults import SIGN_STEP

logger = logging.getLogger(__name__)

PAPER_TARGET_OFFSET = 500


def paper_targets(clean_labels: torch.Tensor, num_classes: int = 1000) -> torch.Tensor:
    """The paper's targeted default: target = (clean top-1 + 500) mod num_classes."""
    return (clean_labels + PAPER_TARGET_OFFSET) % num_classes


def fused_kernel_fits(config: AttackConfig, per_pixel_step: bool = False) -> bool:
    """Whether the fused CUDA update kernel can run ``config``'s update: it takes one scalar step (no per-pixel
    budget map) and steps by the sign."""
    return not per_pixel_step and config.step_rule == SIGN_STEP


def attack_update(
    x: torch.Tensor,
    momentum: torch.Tensor,
    gradient: torch.Tensor,
    config: AttackConfig,
    lower: torch.Tensor,
    upper: torch.Tensor,
    fused: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of the loop: ``m = μ·m + g / mean(|g|)``, ``x = clip(x ± α·sign(m), lower, upper)`` (or
    ``config.step_rule``'s direction instead of the sign: :func:`comcloak.kernels.step_direction`).

    ``lower``/``upper`` are ``max(x0 - eps, 0)`` and ``min(x0 + eps, 1)``; + untargeted, − targeted. The maths is
    ``comcloak.kernels.attack_update_reference``; ``fused`` runs it as the fused CUDA kernel instead when the
    tensors are on a GPU and the kernel library is built (``comcloak.kernels``), and as the reference otherwise.
    Returns ``(x_next, m_next)``.
    """
    step = (-1.0 if config.targeted else 1.0) * config.alpha
    if fused and fused_kernel_fits(config):
        return kernels.attack_update(x, momentum, gradient, lower, upper, step, config.momentum)
    return kernels.attack_update_reference(x, momentum, gradient, lower, upper, step, config.momentum,
                                           config.step_rule)


SurrogateArg = nn.Module | Sequence[nn.Module]


def as_surrogates(classifier: SurrogateArg) -> list[nn.Module]:
    """The surrogate classifiers as a list (one module, or an ensemble's members)."""
    if isinstance(classifier, nn.Module):
        return list(classifier) if isinstance(classifier, nn.ModuleList) else [classifier]
    members = list(classifier)
    if not members:
        raise ValueError("the attack needs at least one surrogate classifier")
    return members


def stand_ins_of(through: nn.Module | None) -> list[nn.Module]:
    """The stand-ins a robust draw picks from: those of ``mix:``/``eot:``, the one given, or none (``none``)."""
    if through is None or isinstance(through, nn.Identity):
        return []
    if isinstance(through, (RandomChoiceThrough, ExpectationThrough)):
        return list(through.choices)
    return [through]


def goal_per_surrogate(labels: torch.Tensor, surrogates: int) -> torch.Tensor:
    """(N,) labels shared by every surrogate, or (N, M) labels of each -> (N, M)."""
    if labels.dim() == 1:
        return labels[:, None].expand(-1, surrogates)
    if labels.dim() != 2 or labels.shape[1] != surrogates:
        raise ValueError(f"labels must be shaped (N,) or (N, {surrogates}), got {tuple(labels.shape)}")
    return labels


def descent_gradient(
    surrogates: list[nn.Module],
    through: nn.Module,
    x: torch.Tensor,
    goal: torch.Tensor,
    config: AttackConfig,
    draw: Draw | None = None,
    loss_scale: float = 1.0,
    dense_draws: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss the loop descends (``comcloak.attacks.loss``) and its gradient with respect to ``x``.

    Without a ``draw``, every surrogate sees ``through(x)`` (an ``eot:`` stand-in's copies averaged); with one, it
    sees :func:`comcloak.attacks.eot.apply_draw` of ``x`` and the loss is averaged over the draws. Either way it is
    averaged over the surrogates and summed over images, each surrogate aiming at its own ``goal`` column (N, M).

    Returns:
        ``(loss, gradient)``: the scalar loss and a gradient shaped like ``x``.
    """
    settings = LoopSettings(loss_scale=loss_scale, dense_draws=dense_draws)
    loss, gradient, _ = descent_and_margins(surrogates, through, x, goal, config, draw, settings, margins=False)
    return loss, gradient


def descent_and_margins(
    surrogates: list[nn.Module],
    through: nn.Module,
    x: torch.Tensor,
    goal: torch.Tensor,
    config: AttackConfig,
    draw: Draw | None,
    settings: LoopSettings,
    margins: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`descent_gradient` (its ``loss_scale`` and ``dense_draws`` from ``settings``), and with ``margins`` each
    image's smallest goal margin over its views (the draws, or the stand-in's copies) and surrogates, (N,), at ``x``:
    what per-photo stopping checks (:func:`comcloak.attacks.stopping.goal_margins`); None without ``margins``.

    Example:
        >>> loss, gradient, margins = descent_and_margins(surrogates, through, x, goal, cfg, None, LoopSettings(), True)
    """
    x = x.detach().requires_grad_(True)
    smallest = None
    with torch.enable_grad():
        if draw is None:
            seen = through(x)
            copies = getattr(through, "copies", 1)
            rows_of = lambda labels: labels.repeat(copies)  # noqa: E731 - stacked copies of the batch
            per_image = lambda rows: rows.reshape(copies, -1).amin(dim=0)  # noqa: E731 - row c * N + n
        else:
            seen = apply_draw(x, draw, stand_ins_of(through), settings.dense_draws)
            copies = draw.mix.shape[1]
            rows_of = lambda labels: labels.repeat_interleave(copies)  # noqa: E731 - row n * D + d
            per_image = lambda rows: rows.reshape(-1, copies).amin(dim=1)  # noqa: E731
        total = x.new_zeros(())
        for index, surrogate in enumerate(surrogates):
            logits = surrogate(seen)
            rows = rows_of(goal[:, index])
            w = goal_weights(rows, logits.shape[-1], config.targeted, logits.dtype)
            total = total + per_image_loss(logits, w, config.loss).sum()
            if margins:  # outside autograd's graph: the gradient is the same with or without
                margin = per_image(goal_margins(logits, rows, config.targeted))
                smallest = margin if smallest is None else torch.minimum(smallest, margin)
        loss = total / (copies * len(surrogates))
        scale = settings.loss_scale
        (gradient,) = torch.autograd.grad(loss * scale if scale != 1.0 else loss, x)
    if scale != 1.0:
        gradient = gradient / scale
    return loss.detach(), gradient, smallest


@dataclass(frozen=True)
class LoopSettings:
    """How :func:`run_attack` runs the loop, never what it computes (the cloaks are the same either way).

    Attributes:
        fused_update: run each update as the fused CUDA kernel when on a GPU (:func:`attack_update`).
        loss_scale: loss scaling for fp16 autocast (the gradient is divided back; a power of two is exact).
        dense_draws: run every stand-in on every draw, weighted, instead of only where picked (same result; no
            data-dependent shapes, so a CUDA graph can capture it).
    """

    fused_update: bool = False
    loss_scale: float = 1.0
    dense_draws: bool = False


def bounds_of(x0: torch.Tensor, config: AttackConfig,
              eps_map: torch.Tensor | None) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """The loop's budget and signed step: the scalars ``eps`` and ``-alpha`` (the loss is descended), or, with a
    per-pixel ``eps_map`` (N, 1 or 3, H, W) of non-negative factors (the face cloak's in [0, 1], the texture
    budget's around 1), both scaled by it (broadcast over x0's channels).

    Example:
        >>> bounds_of(x0, attack_config("mim", eps=8 / 255), None)
        (0.0313..., -0.00313...)
    """
    factors = budget_factors(x0, eps_map)
    if factors is None:
        return config.eps, -config.alpha
    return config.eps * factors, -config.alpha * factors


def budget_factors(x0: torch.Tensor, eps_map: torch.Tensor | None) -> torch.Tensor | None:
    """A per-pixel budget's factors of eps shaped like ``x0`` (N, 3, H, W), from ``eps_map`` (N, 1 or 3, H, W),
    negative values clamped to 0; None for None (the scalar eps)."""
    if eps_map is None:
        return None
    if (eps_map.dim() != 4 or eps_map.shape[0] != x0.shape[0] or eps_map.shape[1] not in (1, 3)
            or eps_map.shape[2:] != x0.shape[2:]):
        raise ValueError(f"eps_map must be shaped ({x0.shape[0]}, 1 or 3, {x0.shape[2]}, {x0.shape[3]}), "
                         f"got {tuple(eps_map.shape)}")
    return eps_map.detach().to(x0).clamp_min(0.0).expand_as(x0)


def run_attack(
    classifier: SurrogateArg,
    x0: torch.Tensor,
    labels: torch.Tensor,
    config: AttackConfig,
    through: nn.Module | None = None,
    *,
    sampler: DrawSampler | None = None,
    settings: LoopSettings = LoopSettings(),
    eps_map: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the attack loop of docs/DESIGN.md §2 and return the adversarial images.

    ::

        x = x0; m = 0
        repeat steps:
            g = ∇x E_draws mean_surrogates L(C(T_draw(x)), goal)      # L: ce or margin, always descended
            m = μ·m + g / mean(|g|)
            x = clip(x − α·sign(m), x0 − ε, x0 + ε, 0, 1)         # step_rule "scaled": m·|sign m|₂/|m|₂

    Args:
        classifier: one module mapping [0, 1] RGB NCHW to logits (it normalises its input itself), or several (a
            surrogate ensemble: the loss is averaged over them).
        x0: clean images (the working views), float NCHW in [0, 1].
        labels: int64 ``(N,)`` — the clean labels (untargeted) or the target classes (targeted), shared by the
            surrogates — or ``(N, M)``, one column per surrogate (each pushed away from its own clean label).
        config: see :func:`attack_config`; ``config.loss`` picks the loss, ``config.eot`` the expectation over the
            attacker's geometry and the platform (off when ``config.eot.draws`` is 0).
        through: the differentiable stand-in ``T`` for the compressor (identity when None): a ComModel, diff-JPEG, or
            several (``mix:``/``eot:``; with draws, each draw picks one of them or none).
        sampler: where the draws come from (default: :meth:`DrawSampler.for_images` of ``x0`` and ``config.seed``:
            each image's draws depend on its content and the seed only, so batching changes nothing).
        settings: how the loop runs (:class:`LoopSettings`: fused update, fp16 loss scale, dense draws); the
            default is the reference's.
        eps_map: a per-pixel budget, (N, 1, H, W) or (N, 3, H, W) non-negative factors of ``config.eps`` (the face
            cloak's texture-shaped budget): the bound is ``|x - x0| ≤ eps · eps_map`` and the step ``α · eps_map``
            per pixel (the update runs as the torch reference then: the fused kernel takes a scalar step). None:
            ``config.budget``'s (``texture``: :func:`comcloak.attacks.budget.texture_budget` of ``x0``, computed
            from ``x0`` inside the loop, so a CUDA graph capturing it recomputes it from its static input;
            ``uniform``: the scalar ``eps``, unchanged).

    Returns:
        Adversarial images, float NCHW in [0, 1], with ``|x - x0|∞ ≤ eps`` (``≤ eps · eps_map`` per pixel).

    Example:
        >>> cfg = attack_config("mim", eps=5 / 255)
        >>> x_adv = run_attack(classifier, x0, clean_labels, cfg, through=DiffJPEG(50))
    """
    return run_attack_result(classifier, x0, labels, config, through, sampler=sampler, settings=settings,
                             eps_map=eps_map).images


@dataclass
class _Batch:
    """The per-image state of the loop, sliced together when per-photo stopping compacts the batch."""

    x: torch.Tensor
    momentum: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    step: float | torch.Tensor  # the signed step: a scalar, or per pixel under a per-pixel budget
    goal: torch.Tensor
    sampler: DrawSampler | None
    x0: torch.Tensor  # the clean images and the budget's factors of eps (None: uniform): a growing budget's bounds
    factors: torch.Tensor | None

    def keep(self, kept: torch.Tensor) -> _Batch:
        """The images at the positions ``kept`` (int64) only; the sampler draws for them alone."""
        step = self.step[kept] if isinstance(self.step, torch.Tensor) else self.step
        sampler = self.sampler.subset(kept.tolist()) if self.sampler is not None else None
        factors = self.factors[kept] if self.factors is not None else None
        return _Batch(self.x[kept], self.momentum[kept], self.lower[kept], self.upper[kept], step, self.goal[kept],
                      sampler, self.x0[kept], factors)

    def bounds_at(self, config: AttackConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lower, upper)`` of the update at ``step``: ``clamp(x0 ∓ eps_t · factors, 0, 1)`` with ``eps_t = eps ·``
        :func:`~comcloak.attacks.budget.budget_at` (the exported runners feed the graph the same float32 ``eps_t``);
        the precomputed constant bounds once the scale is 1 (always, without a growing budget)."""
        scale = budget_at(config, step)
        if scale == 1.0:
            return self.lower, self.upper
        budget = config.eps * scale if self.factors is None else config.eps * scale * self.factors
        return (self.x0 - budget).clamp_min(0.0), (self.x0 + budget).clamp_max(1.0)


def run_attack_result(
    classifier: SurrogateArg,
    x0: torch.Tensor,
    labels: torch.Tensor,
    config: AttackConfig,
    through: nn.Module | None = None,
    *,
    sampler: DrawSampler | None = None,
    settings: LoopSettings = LoopSettings(),
    eps_map: torch.Tensor | None = None,
) -> AttackResult:
    """:func:`run_attack`, returning the cloaks with the steps each image used (:class:`AttackResult`).

    With ``config.stop_after`` > 0 an image stops once it has been safe (margin ``config.stop_margin`` on every draw
    and surrogate) at that many consecutive steps (:mod:`comcloak.attacks.stopping`); its cloak is the iterate that
    was checked. The remaining steps run on the images still attacked only (compacted: the time saved), each drawing
    from its own generator as in any batch, so an image's cloak does not depend on its batch mates. With 0 (the
    default) every image runs every step, exactly as before. With ``config.eps_start`` the bound grows over the steps
    (:func:`comcloak.attacks.budget.budget_at`, the same for every image still attacked; the step size unchanged).

    Example:
        >>> result = run_attack_result(classifier, x0, labels, attack_config("mim", 5 / 255, stop_after=2))
        >>> result.images.shape, result.steps_used
        (torch.Size([2, 3, 64, 64]), tensor([2, 10]))
    """
    if x0.dim() != 4 or x0.shape[1] != 3:
        raise ValueError(f"x0 must be an RGB batch shaped (N, 3, H, W), got {tuple(x0.shape)}")
    if labels.shape[:1] != (x0.shape[0],):
        raise ValueError(f"labels must be shaped ({x0.shape[0]},) or ({x0.shape[0]}, M), got {tuple(labels.shape)}")
    surrogates = as_surrogates(classifier)
    goal = goal_per_surrogate(labels, len(surrogates))
    through = nn.Identity() if through is None else through
    if config.eot.enabled and sampler is None:
        sampler = DrawSampler.for_images(config.eot, len(stand_ins_of(through)), x0, config.seed)
    x0 = x0.detach()
    if eps_map is None:
        eps_map = texture_budget(x0, config)
    budget, signed_step = bounds_of(x0, config, eps_map)
    lower = (x0 - budget).clamp_min(0.0)
    upper = (x0 + budget).clamp_max(1.0)
    batch = _Batch(x0.clone(), torch.zeros_like(x0), lower, upper, signed_step, goal, sampler, x0,
                   budget_factors(x0, eps_map) if config.ramped else None)
    fused = settings.fused_update and fused_kernel_fits(config, per_pixel_step=eps_map is not None)
    update = kernels.attack_update if fused else functools.partial(kernels.attack_update_reference,
                                                                   rule=config.step_rule)
    if config.stop_after:
        return _stopping_loop(surrogates, through, batch, config, settings, update)
    x, momentum = batch.x, batch.momentum
    debug = logger.isEnabledFor(logging.DEBUG)  # loss.item() waits for the device: only when asked for
    for step in range(config.steps):
        draw = sampler.sample(x0.shape[0], x0.shape[2], x0.shape[3]).to(x0.dtype) if config.eot.enabled else None
        loss, gradient = descent_gradient(surrogates, through, x, goal, config, draw, settings.loss_scale,
                                          settings.dense_draws)
        x, momentum = update(x, momentum, gradient, *batch.bounds_at(config, step), signed_step, config.momentum)
        if debug:
            logger.debug("attack step %d/%d loss %.4f", step + 1, config.steps, loss.item())
    return AttackResult.full(x.detach(), config.steps)


def _stopping_loop(surrogates: list[nn.Module], through: nn.Module, batch: _Batch, config: AttackConfig,
                   settings: LoopSettings, update: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> AttackResult:
    """The loop with per-photo stopping: each step checks the active images' margins at their iterate, writes out
    those that stop (that iterate) and runs the update on the others only."""
    output = batch.x.clone()
    tracker = StopTracker(output.shape[0], config.stop_after, config.stop_margin, output.device)
    height, width = output.shape[2:]
    for step in range(config.steps):
        count = batch.x.shape[0]
        draw = batch.sampler.sample(count, height, width).to(output.dtype) if config.eot.enabled else None
        loss, gradient, margins = descent_and_margins(surrogates, through, batch.x, batch.goal, config, draw,
                                                      settings, margins=True)
        active = tracker.active
        stopping = tracker.check(margins, step)
        if stopping.any():
            output[active[stopping]] = batch.x[stopping].detach()
            kept = torch.nonzero(~stopping).flatten()
            batch, gradient = batch.keep(kept), gradient[kept]
            if not kept.numel():
                break
        batch.x, batch.momentum = update(batch.x, batch.momentum, gradient, *batch.bounds_at(config, step),
                                         batch.step, config.momentum)
        if logger.isEnabledFor(logging.DEBUG):  # loss.item() waits for the device: only when asked for
            logger.debug("attack step %d/%d loss %.4f, %d of %d images go on", step + 1, config.steps, loss.item(),
                         batch.x.shape[0], output.shape[0])
    output[tracker.active] = batch.x.detach()
    return AttackResult(output, tracker.finish(config.steps))
