"""The input gradient of a model as a module of forward ops, and the whole attack step built on it (docs/DESIGN.md §4).

:class:`InputGradient` traces a model with ``torch.fx``, checks at build time that every node has a VJP rule
(:mod:`comcloak.export.vjp`), and at run time evaluates the forward graph, keeping each activation, then walks it
backwards calling the rules. No autograd is involved, so the same ops trace into ONNX for runtimes without one.

:class:`AttackStep` is one iteration of the attack loop of docs/DESIGN.md §2 as a single module
``(x, x0, m, w, eps, alpha, mu) -> (x_next, m_next, logits, loss)``. ``w`` is a float weight per surrogate and class:
the one-hot target (targeted) or minus the one-hot label (untargeted); the loss (:mod:`comcloak.attacks.loss`) is
then always descended, so one graph serves both modes. :class:`RobustAttackStep` is the robust attack's iteration,
with one step's random draws of the platform and the attacker's view as extra inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from comcloak.attacks.blocks import permute_pixels
from comcloak.attacks.eot import DRAW_INPUTS
from comcloak.attacks.loss import goal_weights, loss_gradient, per_image_loss  # noqa: F401 - goal_weights re-exported
from comcloak.attacks.through import COMODEL_MULTIPLE, ComModelThrough
from comcloak.defaults import SIGN_STEP
from comcloak.kernels import attack_update_reference

from .vjp import NodeValues, UnsupportedLayerError, VjpRule, describe_node, prepare_constants, rules_for

logger = logging.getLogger(__name__)


def _map_args(value: Any, env: dict[fx.Node, Any]) -> Any:
    return fx.node.map_arg(value, lambda node: env[node])


class InputGradient(nn.Module):
    """``forward(x, grad_output) -> (output, grad_x)`` for a single-input, single-output model, without autograd.

    Args:
        model: an eval-mode module that ``torch.fx.symbolic_trace`` can trace; every node must have a VJP rule.

    Raises:
        UnsupportedLayerError: at construction, naming the first layer without a rule.

    Example:
        >>> grad = InputGradient(create_model("tiny_classifier"))
        >>> logits, grad_x = grad(x, torch.ones(2, 1000))
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        try:
            self.graph_module = fx.symbolic_trace(model)
        except Exception as exc:  # fx raises TraceError, TypeError, ... for untraceable Python
            raise UnsupportedLayerError(f"{type(model).__name__} cannot be traced by torch.fx: {exc}") from None
        graph = self.graph_module.graph
        placeholders = [node for node in graph.nodes if node.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedLayerError(f"{type(model).__name__}: the gradient graph needs exactly one input")
        output = next(node for node in graph.nodes if node.op == "output")
        if not isinstance(output.args[0], fx.Node):
            raise UnsupportedLayerError(f"{type(model).__name__}: the gradient graph needs exactly one output tensor")
        self.input_node = placeholders[0]
        self.output_node: fx.Node = output.args[0]
        self.needs_grad = self._gradient_path()
        # Only nodes on the gradient path need a rule; the rest (buffer arithmetic, ...) just run forward.
        self.rules: dict[fx.Node, VjpRule] = dict(rules_for(self.graph_module, self.needs_grad))
        self.modules_by_name = dict(self.graph_module.named_modules())
        # Build-time constants of the rules, kept as buffers so that they follow .to() and export as initializers.
        self.constant_names: dict[fx.Node, dict[str, str]] = {}
        for index, node in enumerate(self.rules):
            module = self.modules_by_name.get(node.target) if node.op == "call_module" else None
            names = {}
            for key, tensor in prepare_constants(module).items():
                names[key] = f"vjp_constant_{index}_{key}"
                self.register_buffer(names[key], tensor, persistent=False)
            if names:
                self.constant_names[node] = names

    def _gradient_path(self) -> set[fx.Node]:
        """Nodes that depend on the input and feed the output: the only ones whose gradient is computed."""
        reachable = {self.input_node}
        for node in self.graph_module.graph.nodes:
            if any(arg in reachable for arg in node.all_input_nodes):
                reachable.add(node)
        feeding = {self.output_node}
        for node in reversed(list(self.graph_module.graph.nodes)):
            if node in feeding:
                feeding.update(node.all_input_nodes)
        return reachable & feeding

    def run_forward(self, x: torch.Tensor) -> dict[fx.Node, Any]:
        """Evaluate the traced graph on ``x``; returns every node's value (the activations the rules read)."""
        env: dict[fx.Node, Any] = {}
        for node in self.graph_module.graph.nodes:
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "get_attr":
                value: Any = self.graph_module
                for part in str(node.target).split("."):
                    value = getattr(value, part)
                env[node] = value
            elif node.op == "call_module":
                env[node] = self.modules_by_name[node.target](*_map_args(node.args, env), **_map_args(node.kwargs, env))
            elif node.op == "call_function":
                env[node] = node.target(*_map_args(node.args, env), **_map_args(node.kwargs, env))
            elif node.op == "call_method":
                args = _map_args(node.args, env)
                env[node] = getattr(args[0], node.target)(*args[1:], **_map_args(node.kwargs, env))
        return env

    def run_backward(self, env: dict[fx.Node, Any], grad_output: torch.Tensor) -> torch.Tensor:
        """The gradient of ``sum(output * grad_output)`` with respect to the input, from ``run_forward``'s values."""
        grads: dict[fx.Node, torch.Tensor] = {self.output_node: grad_output}
        for node in reversed(list(self.graph_module.graph.nodes)):
            if node not in self.needs_grad or node is self.input_node or node not in grads:
                continue
            gradient = grads.pop(node)
            values = NodeValues(
                node=node,
                module=self.modules_by_name.get(node.target) if node.op == "call_module" else None,
                args=_map_args(node.args, env),
                kwargs=_map_args(node.kwargs, env),
                output=env[node],
                needs_grad=self.needs_grad,
                constants={key: getattr(self, name) for key, name in self.constant_names.get(node, {}).items()},
            )
            for source, source_grad in self.rules[node](values, gradient):
                if source_grad.shape != env[source].shape:
                    raise RuntimeError(  # an internal bug in a rule, not a user error
                        f"VJP rule for {describe_node(node, values.module)} gave a {tuple(source_grad.shape)} gradient "
                        f"for a {tuple(env[source].shape)} input"
                    )
                grads[source] = grads[source] + source_grad if source in grads else source_grad
        if self.input_node not in grads:
            return torch.zeros_like(env[self.input_node])
        return grads[self.input_node]

    def forward(self, x: torch.Tensor, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        env = self.run_forward(x)
        return env[self.output_node], self.run_backward(env, grad_output)


class StaticSizeThrough(nn.Module):
    """A ComModel stand-in for one fixed input size: static edge padding to a multiple of 16, crop back, clip.

    ``ComModelThrough`` decides its padding from the input's shape at run time, which ``torch.fx`` cannot trace;
    an exported graph has a fixed height and width, so the padding is decided here, once.
    """

    def __init__(self, comodel: nn.Module, height: int, width: int) -> None:
        super().__init__()
        self.comodel = comodel
        self.height, self.width = height, width
        self.pad_bottom = (-height) % COMODEL_MULTIPLE
        self.pad_right = (-width) % COMODEL_MULTIPLE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_bottom or self.pad_right:
            x = F.pad(x, (0, self.pad_right, 0, self.pad_bottom), mode="replicate")
            return self.comodel(x)[:, :, : self.height, : self.width].clamp(0.0, 1.0)
        return self.comodel(x).clamp(0.0, 1.0)


class ThroughThenClassify(nn.Module):
    """``classifier(through(x))`` as one traceable module (the function whose input gradient the attack needs)."""

    def __init__(self, classifier: nn.Module, through: nn.Module | None = None) -> None:
        super().__init__()
        self.through = through if through is not None else nn.Identity()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.through(x))


def traceable_through(through: nn.Module | None, height: int, width: int) -> nn.Module:
    """The stand-in as a module ``torch.fx`` can trace for ``height`` x ``width`` inputs.

    Identity and ComModel stand-ins (``none``, ``comodel:...``) are supported; others (diff-JPEG, ``mix:``) have
    shape-dependent or random Python control flow and raise :class:`UnsupportedLayerError`.
    """
    if through is None or isinstance(through, nn.Identity):
        return nn.Identity()
    if isinstance(through, ComModelThrough):
        return StaticSizeThrough(through.comodel, height, width)
    raise UnsupportedLayerError(
        f"the stand-in {type(through).__name__} cannot be exported; exportable stand-ins: none, comodel:CODEC, "
        "comodel:PATH"
    )


def momentum_update(
    grad: torch.Tensor, x: torch.Tensor, x0: torch.Tensor, m: torch.Tensor,
    scalars: tuple[torch.Tensor, torch.Tensor, torch.Tensor], budget: torch.Tensor, step_rule: str = SIGN_STEP,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop's update on a descent gradient: ``m_next = mu*m + g/mean|g|``, ``x_next = clip(x - a*sign(m_next),
    max(x0 - e, 0), min(x0 + e, 1))`` with ``e = eps * budget`` and ``a = alpha * budget`` per pixel (``budget``
    (N, 1, H, W); all ones: exactly the scalar eps and alpha) — the one update rule,
    :func:`comcloak.kernels.attack_update_reference`, with the step descending and the bounds from the graph's
    inputs, as ``attacks/loop.bounds_of`` scales them; ``step_rule`` ``scaled``: the scaled momentum instead of the
    sign (:func:`comcloak.kernels.step_direction`), fixed in the graph; ``scalars``: ``(eps, alpha, mu)``."""
    eps, alpha, mu = scalars
    per_pixel = eps * budget
    lower = (x0 - per_pixel).clamp_min(0.0)
    upper = (x0 + per_pixel).clamp_max(1.0)
    return attack_update_reference(x, m, grad, lower, upper, -(alpha * budget), mu, step_rule)


def surrogates_backward(
    gradients: Sequence[InputGradient], seen: torch.Tensor, w: torch.Tensor, kind: str, draws: int = 1,
    per_draw: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The surrogates' part of a step: each classifies ``seen`` ((N * draws) rows, draw-major within an image) and
    the loss is averaged over surrogates and draws. Returns (input gradient of ``seen``, logits (N, M, K) averaged
    over the draws, or with ``per_draw`` each draw's (N, M, D, K), loss (N,)); ``w`` is (N, M, K)."""
    count = len(gradients) * draws
    grad, all_logits, loss = None, [], None
    for index, gradient in enumerate(gradients):
        env = gradient.run_forward(seen)
        logits = env[gradient.output_node]  # (N * draws, K)
        member_w = w[:, index].unsqueeze(1).expand(-1, draws, -1).reshape(logits.shape)
        member_loss = per_image_loss(logits, member_w, kind).reshape(-1, draws).sum(1) / count
        member_grad = gradient.run_backward(env, loss_gradient(logits, member_w, kind) / count)
        grad = member_grad if grad is None else grad + member_grad
        loss = member_loss if loss is None else loss + member_loss
        per_image = logits.reshape(-1, draws, logits.shape[1])
        all_logits.append(per_image if per_draw else per_image.mean(1))
    return grad, torch.stack(all_logits, dim=1), loss


def _per_surrogate(w: torch.Tensor) -> torch.Tensor:
    """w as (N, M, K): a (N, K) w is one surrogate's."""
    return w.unsqueeze(1) if w.dim() == 2 else w


class AttackStep(nn.Module):
    """One attack iteration ``(x, x0, m, w, eps, alpha, mu, budget) -> (x_next, m_next, logits, loss)`` of forward
    ops.

    Args:
        models: ``classifier(through(x))`` (e.g. :class:`ThroughThenClassify`), traceable, eval mode; or one per
            surrogate of an ensemble (the loss is averaged over them).
        loss: ``ce`` or ``margin`` (:mod:`comcloak.attacks.loss`; its gradient is written out by hand here).
        step_rule: ``sign`` or ``scaled``: the update's direction (:func:`momentum_update`).

    Inputs (N images, M surrogates, K classes, float32):
        x, x0, m: (N, 3, H, W) — current image, clean image, momentum (zeros at the first step).
        w: (N, M, K) — per surrogate, the one-hot target (targeted) or minus the one-hot label (untargeted);
            (N, K) for one surrogate.
        eps, alpha, mu: (1,) — L∞ budget and step size on the [0, 1] scale, momentum μ (0 for BIM/FGSM).
        budget: (N, 1, H, W) — each pixel's factor of eps and alpha (ones: the uniform budget).

    Outputs:
        x_next: ``clip(x - alpha * budget * sign(m_next), max(x0 - eps * budget, 0), min(x0 + eps * budget, 1))``.
        m_next: ``mu * m + g / mean(|g|)`` per image, ``g`` the gradient of the per-image loss.
        logits: (N, M, K) at ``x``; loss: (N,) the loss averaged over the surrogates at ``x``.
    """

    def __init__(self, models: nn.Module | Sequence[nn.Module], loss: str = "ce", step_rule: str = SIGN_STEP) -> None:
        super().__init__()
        members = [models] if isinstance(models, nn.Module) else list(models)
        self.gradients = nn.ModuleList([InputGradient(model) for model in members])
        self.loss_kind = loss
        self.step_rule = step_rule

    @property
    def gradient(self) -> InputGradient:
        """The first surrogate's input gradient."""
        return self.gradients[0]

    def forward(
        self,
        x: torch.Tensor,
        x0: torch.Tensor,
        m: torch.Tensor,
        w: torch.Tensor,
        eps: torch.Tensor,
        alpha: torch.Tensor,
        mu: torch.Tensor,
        budget: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        grad, logits, loss = surrogates_backward(self.gradients, x, _per_surrogate(w), self.loss_kind)
        x_next, m_next = momentum_update(grad, x, x0, m, (eps, alpha, mu), budget, self.step_rule)
        return x_next, m_next, logits, loss


class RobustAttackStep(nn.Module):
    """One iteration of the robust attack (``comcloak.attacks.eot``) as forward ops, with the draws as inputs:
    ``(x, x0, m, w, eps, alpha, mu, budget, pre_h, pre_w, mix, post_h, post_w) -> (x_next, m_next, logits, loss)``.

    Each draw maps the working view through ``pre_h · x · pre_wᵀ`` (the platform's downscale), a mix of the identity
    and the stand-ins (the platform's codec), and ``post_h · . · post_wᵀ`` (the attacker's crop, flip and shift) to
    an S x S view every surrogate classifies. The backward pass is written out: ``Aᵀ · g · B`` for each separable map,
    the stand-ins' and classifiers' input gradients (:class:`InputGradient`) for the rest. Every stand-in runs on every
    draw that may pick it (the first ``coded_draws``) and is weighted by ``mix`` (a fixed graph; the eager reference
    runs each only where picked).

    Args:
        surrogates: the classifiers (traceable, eval mode); the loss is averaged over them and the draws.
        stand_ins: traceable stand-ins for the working-view size (:func:`traceable_through`); may be empty.
        draws: D, draws per image and step.
        loss: ``ce`` or ``margin``.
        coded_draws: C, how many of each image's draws (the first) may go through a stand-in (default all; the
            sampler's ``EotSettings.coded_draws``); the stand-ins run on those only.
        step_rule: ``sign`` or ``scaled``: the update's direction (:func:`momentum_update`).

    Inputs (N images, M surrogates, K classes, J stand-ins, working view H x W, attacker view S x S): as
    :class:`AttackStep`, plus the draw (``comcloak.attacks.eot.Draw``) as ``*draw``: pre_h (N, D, H, H), pre_w
    (N, D, W, W), mix (N, D, J + 1), post_h (N, D, S, H), post_w (N, D, S, W).

    Outputs: as :class:`AttackStep`, but logits are each draw's, (N, M, D, K) (graph format 6; per-photo stopping
    checks every draw's margin on the host, ``comcloak.attacks.stopping``).
    """

    def __init__(self, surrogates: Sequence[nn.Module], stand_ins: Sequence[nn.Module], draws: int,
                 loss: str = "ce", coded_draws: int | None = None, step_rule: str = SIGN_STEP) -> None:
        super().__init__()
        if draws < 1:
            raise ValueError(f"the robust step needs at least one draw, got {draws}")
        # The stand-ins run on each image's first coded_draws draws only (the sampler codes no others).
        self.coded_draws = draws if coded_draws is None else coded_draws
        if not 0 <= self.coded_draws <= draws:
            raise ValueError(f"coded_draws must be in 0..{draws}, got {coded_draws}")
        self.classifier_gradients = nn.ModuleList([InputGradient(model) for model in surrogates])
        self.stand_in_gradients = nn.ModuleList([InputGradient(model) for model in stand_ins])
        self.draws = draws
        self.loss_kind = loss
        self.step_rule = step_rule

    def forward(
        self,
        x: torch.Tensor,
        x0: torch.Tensor,
        m: torch.Tensor,
        w: torch.Tensor,
        eps: torch.Tensor,
        alpha: torch.Tensor,
        mu: torch.Tensor,
        budget: torch.Tensor,
        *draw: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # The draw's tensors are graph inputs of their own, after the step's (the schema's DRAW_INPUTS order).
        viewed, saved = self.views(x, draw)
        grad_viewed, logits, loss = surrogates_backward(self.classifier_gradients, viewed, _per_surrogate(w),
                                                        self.loss_kind, self.draws, per_draw=True)
        grad = self.views_backward(grad_viewed, saved)
        x_next, m_next = momentum_update(grad, x, x0, m, (eps, alpha, mu), budget, self.step_rule)
        return x_next, m_next, logits, loss

    def views(self, x: torch.Tensor, draw: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """What the surrogates see of working views ``x`` (N, 3, H, W) under ``draw`` (the five DRAW_INPUTS):
        (N * D, 3, S, S), draw-major within an image, and what :meth:`views_backward` needs."""
        pre_h, pre_w, mix, post_h, post_w = draw[:5]
        height, width = x.shape[2], x.shape[3]
        view_h, view_w = post_h.shape[2], post_w.shape[2]
        lowpassed = pre_h.unsqueeze(2) @ x.unsqueeze(1) @ pre_w.transpose(2, 3).unsqueeze(2)  # (N, D, 3, H, W)
        # The first C draws of each image may go through a stand-in; the others are the identity.
        split = self.coded_draws if self.stand_in_gradients else 0
        flat = lowpassed[:, :split].reshape(-1, 3, height, width)  # (N*C, 3, H, W)
        weights = mix[:, :split].reshape(-1, mix.shape[2], 1, 1, 1)  # (N*C, J+1, 1, 1, 1)
        coded = flat * weights[:, 0]
        stand_in_envs = []
        for index, gradient in enumerate(self.stand_in_gradients, start=1):
            env = gradient.run_forward(flat)
            coded = coded + env[gradient.output_node] * weights[:, index]
            stand_in_envs.append(env)
        coded = torch.cat([coded.reshape(-1, split, 3, height, width), lowpassed[:, split:]], dim=1) if split else \
            lowpassed
        viewed = (post_h.unsqueeze(2) @ coded @ post_w.transpose(2, 3).unsqueeze(2)).reshape(-1, 3, view_h, view_w)
        if len(draw) > len(DRAW_INPUTS):  # BSR: a pixel permutation of each view (comcloak.attacks.eot)
            viewed = permute_pixels(viewed, draw[len(DRAW_INPUTS)].reshape(viewed.shape[0], -1))
        saved = {"draw": draw, "split": split, "weights": weights, "envs": stand_in_envs, "size": (height, width)}
        return viewed, saved

    def views_backward(self, grad_viewed: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        """The gradient of the working views (N, 3, H, W) from that of :meth:`views`' output (N * D, 3, S, S):
        ``Aᵀ · g · B`` for each separable map and the stand-ins' input gradients, summed over the draws."""
        pre_h, pre_w, _, post_h, post_w = saved["draw"][:5]
        split, weights, (height, width) = saved["split"], saved["weights"], saved["size"]
        if len(saved["draw"]) > len(DRAW_INPUTS):  # a permutation's transpose: the gather by its inverse, no Scatter
            inverse = saved["draw"][len(DRAW_INPUTS) + 1]
            grad_viewed = permute_pixels(grad_viewed, inverse.reshape(grad_viewed.shape[0], -1))
        grad_viewed = grad_viewed.reshape(-1, self.draws, 3, post_h.shape[2], post_w.shape[2])
        grad_coded = post_h.transpose(2, 3).unsqueeze(2) @ grad_viewed @ post_w.unsqueeze(2)  # (N, D, 3, H, W)
        if split:
            grad_first = grad_coded[:, :split].reshape(-1, 3, height, width)
            grad_flat = grad_first * weights[:, 0]
            for index, (gradient, env) in enumerate(zip(self.stand_in_gradients, saved["envs"]), start=1):
                grad_flat = grad_flat + gradient.run_backward(env, grad_first * weights[:, index])
            grad_lowpassed = torch.cat([grad_flat.reshape(-1, split, 3, height, width), grad_coded[:, split:]], dim=1)
        else:
            grad_lowpassed = grad_coded
        return (pre_h.transpose(2, 3).unsqueeze(2) @ grad_lowpassed @ pre_w.unsqueeze(2)).sum(1)
