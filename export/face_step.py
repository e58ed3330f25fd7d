"""The face cloak's attack step as forward ops, with the warp and the draws as inputs (docs/faces.md, "The fast path").

One iteration of the face cloak (``attacks/faces/cloak.attack_face``: the one loop, ``attacks/loop.run_attack``, with
:class:`~comcloak.attacks.faces.view.IdentityView` as its "classifier" and the ``identity`` loss) written out, like
:class:`~comcloak.export.gradient.RobustAttackStep`, as one module of forward ops that traces into ONNX:

1. the loop's draws over the working view (downscale, codec stand-in, shift: ``RobustAttackStep.views``);
2. the attacker's jittered alignment: a bilinear warp of each draw to the recogniser's 112 x 112 crop, given as its
   gather taps (``warp_index``, ``warp_weight``: :func:`~comcloak.models.faces.align.bilinear_taps` of the per-draw
   similarity, the mirror folded in), so the graph gathers (ONNX ``GatherElements``) rather than samples a grid;
3. the recogniser (its input gradient by the VJP rules, :class:`~comcloak.export.gradient.InputGradient`), the unit
   embedding and its cosine to the clean ``gallery``, the loss and its gradient by hand;
4. back through the normalisation, the recogniser, the warp (the transpose of a gather is a scatter-add: ONNX
   ``ScatterElements`` with ``reduction="add"``, opset >= 16) and the draws; the MIM update and clip.

No GridSample and no GridSample gradient. The host keeps every random choice: the loop's draws
(:class:`~comcloak.attacks.eot.DrawSampler`) and the view's jitter (:func:`warp_inputs`, from the view's own
generator), drawn in the torch reference's order, so a runner of this graph gives the torch path's cloak up to float32
rounding.

Inputs (N images, D draws, J stand-ins, K gallery embeddings of E, working view S x S, crop C x C, P = C * C): the
robust step's (``x, x0, m, w, eps, alpha, mu``, then ``pre_h, pre_w, mix, post_h, post_w``), then
:data:`FACE_INPUTS`: ``gallery`` (N, K, E) unit embeddings, ``warp_index`` (N, D, 4, P) int64 into the S * S
view, ``warp_weight`` (N, D, 4, P), ``budget`` (N, 1, S, S): the per-pixel factors of ``eps`` and ``alpha`` (the
texture-shaped budget, ``attacks/faces/budget.texture_map``; ones: the flat budget), as ``run_attack``'s
``eps_map``. Outputs: ``x_next, m_next``, ``logits`` (N, 1, K) the cosines averaged over the draws, ``loss`` (N,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from comcloak.attacks.eot import DRAW_INPUTS
from comcloak.attacks.loss import loss_gradient, per_image_loss
from comcloak.defaults import SIGN_STEP
from comcloak.models.faces import ARCFACE_SIZE
from comcloak.models.faces.align import bilinear_taps

from .gradient import InputGradient, RobustAttackStep, momentum_update
from .step_io import STEP_INPUTS, StepLayout, step_tensor_shapes

FACE_INPUTS = ("gallery", "warp_index", "warp_weight", "budget")
FACE_KIND = "face"  # the metadata's "kind" of a face step graph
TAPS = 4  # bilinear taps per output pixel
NORM_EPS = 1e-12  # F.normalize's default floor on the embedding's norm


@dataclass(frozen=True)
class FaceStepLayout(StepLayout):
    """A face step graph's layout: the robust step's (draws, stand-ins, view size = the working view, loss) plus the
    recogniser's embedding width and crop side. Stored in the graph's metadata (``kind`` = ``face``)."""

    embedding: int = 128
    crop: int = ARCFACE_SIZE

    @property
    def input_names(self) -> tuple[str, ...]:
        return STEP_INPUTS + DRAW_INPUTS + FACE_INPUTS

    @property
    def logits_per_draw(self) -> bool:
        return False  # the face step's "logits" are the cosines averaged over the draws, (N, 1, K)

    def metadata(self) -> dict[str, str]:
        return {**super().metadata(), "kind": FACE_KIND, "embedding": str(self.embedding), "crop": str(self.crop)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> FaceStepLayout:
        base = StepLayout.from_metadata(metadata)
        return cls(base.surrogates, base.draws, base.stand_ins, base.view_size, base.loss, base.coded_draws,
                   int(metadata.get("embedding", cls.embedding)), int(metadata.get("crop", cls.crop)),
                   step_rule=base.step_rule)


def face_tensor_shapes(batch: int, size: int, gallery: int, layout: FaceStepLayout) -> dict[str, tuple[int, ...]]:
    """Every input and output of a face step graph for ``batch`` working views of ``size`` and a gallery of
    ``gallery`` embeddings, by name."""
    shapes = step_tensor_shapes(batch, size, size, gallery, layout)
    taps = (batch, layout.draws, TAPS, layout.crop * layout.crop)
    shapes.update(gallery=(batch, gallery, layout.embedding), warp_index=taps, warp_weight=taps,
                  budget=(batch, 1, size, size))
    return shapes


def fold_flips(index: torch.Tensor, weight: torch.Tensor, flips: torch.Tensor,
               size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Taps (B, 4, P) of crops of ``size`` mirrored left-right where ``flips`` (B,): gathering them is gathering the
    unmirrored taps and flipping the crop (``IdentityView.embed``), exactly."""
    def mirrored(taps: torch.Tensor) -> torch.Tensor:
        shaped = taps.reshape(*taps.shape[:2], *size)
        return torch.where(flips[:, None, None, None], shaped.flip(-1), shaped).reshape(taps.shape)

    return mirrored(index), mirrored(weight)


def warp_inputs(view: nn.Module, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's alignment draws of ``view`` (an :class:`~comcloak.attacks.faces.view.IdentityView`) for ``batch``
    views of ``size`` pixels, as gather taps: ``index`` (batch, 4, P) int64 and ``weight`` (batch, 4, P) float32.

    It draws from the view's generator exactly as one call of the view does in the torch loop (``view.matrices``),
    and computes the taps in float32 as ``warp_affine`` does there, so the gathered crops are the torch path's.

    Example:
        >>> index, weight = warp_inputs(view, 2, 224)   # index (2, 4, 12544): 112 x 112 crops of 224 x 224 views
    """
    matrix, flips = view.matrices(batch, size)
    crop = (ARCFACE_SIZE, ARCFACE_SIZE)
    index, weight = bilinear_taps(matrix.float(), (size, size), crop, torch.float32)
    return fold_flips(index, weight, flips, crop)


def gather_warp(views: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, crop: int) -> torch.Tensor:
    """Bilinear crops (B, 3, crop, crop) of ``views`` (B, 3, S, S) from their taps (B, 4, P): four gathers, summed
    in ``warp_affine``'s order (the same float32 sums)."""
    batch, channels = views.shape[0], views.shape[1]
    flat = views.reshape(batch, channels, -1)
    out = None
    for tap in range(TAPS):
        gathered = flat.gather(2, index[:, None, tap].expand(-1, channels, -1))
        term = gathered * weight[:, None, tap]
        out = term if out is None else out + term
    return out.reshape(batch, channels, crop, crop)


def scatter_warp(grad_crops: torch.Tensor, index: torch.Tensor, weight: torch.Tensor,
                 like: torch.Tensor) -> torch.Tensor:
    """The VJP of :func:`gather_warp`: each crop pixel's gradient, weighted, added back to its four source pixels
    (a scatter-add; ONNX ``ScatterElements``, ``reduction="add"``). Returns a gradient shaped as ``like``
    (B, 3, S, S)."""
    batch, channels = grad_crops.shape[0], grad_crops.shape[1]
    grad = grad_crops.reshape(batch, channels, 1, -1) * weight[:, None]  # (B, 3, 4, P)
    positions = index[:, None].expand(-1, channels, -1, -1).reshape(batch, channels, -1)
    flat = torch.zeros_like(like).reshape(batch, channels, -1)
    return flat.scatter_add(2, positions, grad.reshape(batch, channels, -1)).reshape(like.shape)


class FaceAttackStep(RobustAttackStep):
    """One face-cloak iteration ``(x, x0, m, w, eps, alpha, mu, *draw, gallery, warp_index, warp_weight) ->
    (x_next, m_next, logits, loss)`` of forward ops (the module docstring; shapes there).

    Args:
        recogniser: eval-mode, traceable, (B, 3, 112, 112) crops in [0, 1] -> (B, E) embeddings (SFace).
        stand_ins: traceable stand-ins for the working view (:func:`~comcloak.export.gradient.traceable_through`).
        draws: D, the loop's draws per step (``EotSettings.draws``).
        loss: the loss on the cosines (``identity``: the cosine to the clean embedding, descended).
        coded_draws: how many of each image's draws (the first) may go through a stand-in.
        crop: the recogniser's input side (the taps' P is its square).
        step_rule: ``sign`` or ``scaled``: the update's direction (``comcloak.export.gradient.momentum_update``).

    Example:
        >>> step = FaceAttackStep(create_face_model("tiny_sface"), [], draws=2)
        >>> x_next, m_next, cosines, loss = step(x, x0, m, w, eps, alpha, mu, *draw, gallery, index, weight)
    """

    def __init__(self, recogniser: nn.Module, stand_ins: list[nn.Module], draws: int, loss: str = "identity",
                 coded_draws: int | None = None, crop: int = ARCFACE_SIZE, step_rule: str = SIGN_STEP) -> None:
        super().__init__([], stand_ins, draws, loss, coded_draws, step_rule)
        self.recogniser_gradient = InputGradient(recogniser)
        self.crop = crop

    def forward(
        self,
        x: torch.Tensor,
        x0: torch.Tensor,
        m: torch.Tensor,
        w: torch.Tensor,
        eps: torch.Tensor,
        alpha: torch.Tensor,
        mu: torch.Tensor,
        *draw: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # ``draw``: the loop's five DRAW_INPUTS, then FACE_INPUTS (one var-arg, as the robust step's, for the export).
        viewed, saved = self.views(x, draw[: len(DRAW_INPUTS)])
        *warp, budget = draw[len(DRAW_INPUTS):]
        grad_viewed, logits, loss = self.identity_backward(viewed, w, *warp)
        grad = self.views_backward(grad_viewed, saved)
        # The per-pixel budget scales the bound and the step as run_attack's eps_map does (attacks/loop.bounds_of).
        x_next, m_next = momentum_update(grad, x, x0, m, (eps, alpha, mu), budget, self.step_rule)
        return x_next, m_next, logits, loss

    def identity_backward(self, viewed: torch.Tensor, w: torch.Tensor, gallery: torch.Tensor, index: torch.Tensor,
                          weight: torch.Tensor) -> tuple[torch.Tensor, Any, Any]:
        """The recogniser's part: crops of ``viewed`` (N * D, 3, S, S), embeddings, cosines to ``gallery`` (N, K, E),
        the loss on ``w`` (N, K) or (N, 1, K) averaged over the draws, and back. Returns (gradient of ``viewed``,
        cosines (N, 1, K) averaged over the draws, loss (N,))."""
        draws, rows = self.draws, viewed.shape[0]
        index, weight = index.reshape(rows, TAPS, -1), weight.reshape(rows, TAPS, -1)
        crops = gather_warp(viewed, index, weight, self.crop)
        env = self.recogniser_gradient.run_forward(crops)
        embedding = env[self.recogniser_gradient.output_node]  # (B, E)
        norm = embedding.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
        unit = embedding / norm
        per_row = gallery.unsqueeze(1).expand(-1, draws, -1, -1).reshape(rows, gallery.shape[1], -1)  # (B, K, E)
        cosines = (per_row @ unit.unsqueeze(2)).squeeze(2)  # (B, K)
        goal = w.reshape(w.shape[0], -1).unsqueeze(1).expand(-1, draws, -1).reshape(cosines.shape)
        loss = per_image_loss(cosines, goal, self.loss_kind).reshape(-1, draws).sum(1) / draws
        grad_cosines = loss_gradient(cosines, goal, self.loss_kind) / draws
        grad_unit = (grad_cosines.unsqueeze(1) @ per_row).squeeze(1)  # (B, E)
        # d(e / |e|): (g - u (u . g)) / |e|
        grad_embedding = (grad_unit - unit * (unit * grad_unit).sum(1, keepdim=True)) / norm
        grad_crops = self.recogniser_gradient.run_backward(env, grad_embedding)
        grad_viewed = scatter_warp(grad_crops, index, weight, viewed)
        return grad_viewed, cosines.reshape(-1, draws, cosines.shape[1]).mean(1).unsqueeze(1), loss


def identity_reference(recogniser: nn.Module, viewed: torch.Tensor, gallery: torch.Tensor, index: torch.Tensor,
                       weight: torch.Tensor) -> torch.Tensor:
    """The cosines (N * D, K) of what the torch loop computes from the same views and taps, by autograd-friendly
    torch ops (the self-check's and the tests' reference; ``IdentityView.forward`` with the warp given as taps)."""
    rows, draws = viewed.shape[0], index.shape[1]
    crop = int(round(index.shape[-1] ** 0.5))
    crops = gather_warp(viewed, index.reshape(rows, TAPS, -1), weight.reshape(rows, TAPS, -1).to(viewed.dtype), crop)
    unit = F.normalize(recogniser(crops), dim=-1)
    per_row = gallery.unsqueeze(1).expand(-1, draws, -1, -1).reshape(rows, gallery.shape[1], -1)
    return (per_row.to(unit.dtype) @ unit.unsqueeze(2)).squeeze(2)
