"""The self-checks every export of the attack step runs before its file appears (docs/DESIGN.md §4).

1. ``onnx.checker`` (full check, with shape inference; run by the export);
2. an op whitelist of what TensorRT's ONNX parser accepts (:data:`TENSORRT_ONNX_OPS`, :func:`tensorrt_op_violations`;
   no Scatter, MaxPool without its indices output, Conv/ConvTranspose weights constant);
3. ONNX Runtime against ``torch.autograd.grad`` in float64 on :data:`CHECK_BATCH` fresh random images
   (:func:`check_against_autograd`): the normalised gradient (``m_next`` with ``m = 0, mu = 0``), logits and loss.
   It also holds ``x_next`` to the update applied to ONNX Runtime's own ``m_next`` with the per-pixel budget (``eps
   * budget``, ``alpha * budget``: the example inputs' budget is random in [0.25, 2]), to :data:`UPDATE_TOLERANCE`:
   the bound and the step are per pixel, exactly as the torch loop's.
   The check is *calibrated*: torch's own float32 autograd is measured against the same float64 reference on the
   same images, and ONNX Runtime passes when its typical error (the median over the images) is at most
   ``max(GRADIENT_TOLERANCE, FLOAT32_ERROR_FACTOR x torch's)`` and its worst image at most
   ``max(WORST_IMAGE_TOLERANCE, FLOAT32_ERROR_FACTOR x torch's worst)`` (:class:`SelfCheck`).

Each image's error is ``mean|a - b| / mean|b|``. A max-norm error is not usable for gradients of these networks: a
ReLU6 mask or a ComModel clip that flips between float32 and float64 moves a patch of the gradient, so even torch's
own float32 autograd is up to 0.1 from float64 in single pixels. Such flips are rare events: measured at 224x224
through ``comodel:jpeg:50`` with EfficientNet-Lite0 (18 images), an image without one is 2e-6 from float64, an
image with one up to 2.7e-3, in about a third of the images, for torch float32 and ONNX Runtime alike but on
different images (ONNX Runtime fuses and reorders the same arithmetic). A fixed 1e-3 on the batch mean therefore
failed exports of the default stand-in at random; the median over images and the calibrated bounds do not, while
a wrong VJP rule (a ReLU that lets every gradient through) is off by more than 0.1 on every image.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from comcloak.attacks.eot import Draw, apply_draw
from comcloak.attacks.loop import as_surrogates, stand_ins_of
from comcloak.attacks.loss import per_image_loss
from comcloak.defaults import SIGN_STEP
from comcloak.kernels import step_direction

from .optional import import_optional
from .step_io import INPUT_NAMES, OUTPUT_NAMES, StepLayout

GRADIENT_TOLERANCE = 1e-3  # per image mean |error| / mean |reference|: floor of the bound on the median image
UPDATE_TOLERANCE = 1e-6  # x_next against the update recomputed from the graph's own m_next: float32 rounding only
WORST_IMAGE_TOLERANCE = 1e-2  # floor of the bound on the worst image (a float32 flip reaches 2.7e-3, a bug 0.1)
# ONNX Runtime may be this many times further from float64 than torch's own float32 autograd on the same images.
FLOAT32_ERROR_FACTOR = 3.0
CHECK_BATCH = 5  # images of the runtime check: odd (a median), and a batch size the export never saw
CHECK_SEED = 0  # seeds the export's example inputs and the check's images: every export checks the same

# Operators the TensorRT ONNX parser (onnx-tensorrt, TensorRT 10) imports, restricted to what float graphs of
# this kind can need. Anything else in an exported step graph fails the export.
TENSORRT_ONNX_OPS = frozenset({
    "Abs", "Add", "And", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Div", "Equal", "Exp", "Expand", "Flatten", "Floor", "Gather", "Gemm",
    "GatherElements",  # the BSR draws' pixel permutation and its inverse (comcloak.attacks.blocks.permute_pixels)
    "GlobalAveragePool", "Greater", "GreaterOrEqual", "HardSigmoid", "Identity", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Not", "Or", "Pad", "Pow", "ReduceMax",
    "ReduceMean", "ReduceSum", "Relu", "Reshape", "Round", "Shape", "Sigmoid", "Sign", "Slice", "Softmax", "Split",
    "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "TopK", "Transpose", "Unsqueeze", "Where",
})



def tensorrt_op_violations(model: Any) -> list[str]:
    """Reasons the ONNX ``model`` (a ModelProto) would not pass TensorRT's ONNX parser; empty when it would."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    problems = []
    for node in model.graph.node:
        where = f"{node.op_type} node {node.name!r}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {node.domain!r}")
        elif node.op_type not in TENSORRT_ONNX_OPS:
            problems.append(f"{where}: operator not in the TensorRT whitelist")
        elif node.op_type == "MaxPool" and len([out for out in node.output if out]) > 1:
            problems.append(f"{where}: MaxPool with an indices output")
        elif node.op_type in ("Conv", "ConvTranspose") and node.input[1] not in constants:
            problems.append(f"{where}: weights are not a constant initializer")
    if len(model.functions):
        problems.append("graph contains ONNX functions (TensorRT needs them inlined)")
    return problems


def relative_error(value: np.ndarray | torch.Tensor, reference: torch.Tensor) -> float:
    """``mean|value - reference| / mean|reference|`` in float64."""
    value = torch.as_tensor(np.asarray(value), dtype=torch.float64)
    reference = reference.detach().to(torch.float64)
    return float((value - reference).abs().mean() / reference.abs().mean().clamp_min(1e-30))


def calibrated_tolerance(torch_float32_error: float, floor: float = GRADIENT_TOLERANCE) -> float:
    """The error ONNX Runtime may have against float64: ``max(floor, FLOAT32_ERROR_FACTOR x torch's float32 error on
    the same images)``, so float32 rounding passes and a wrong rule (off by order 1) does not."""
    return max(floor, FLOAT32_ERROR_FACTOR * torch_float32_error)


@dataclass(frozen=True)
class SelfCheck:
    """What the export's runtime check measured, per image: ONNX Runtime's and torch float32's relative errors
    against float64 autograd (``*_errors``: gradient; ``*_output_errors``: the larger of logits and loss)."""

    errors: tuple[float, ...]
    output_errors: tuple[float, ...]
    torch_errors: tuple[float, ...]
    torch_output_errors: tuple[float, ...]
    update_error: float = 0.0  # max |x_next - the update of m_next| (the per-pixel bound and step); 0: not measured

    @property
    def gradient_error(self) -> float:
        """ONNX Runtime's typical (median image) gradient error."""
        return float(np.median(self.errors))

    @property
    def torch_gradient_error(self) -> float:
        return float(np.median(self.torch_errors))

    @property
    def logits_error(self) -> float:
        return max(self.output_errors)

    @property
    def torch_logits_error(self) -> float:
        return max(self.torch_output_errors)

    @property
    def gradient_tolerance(self) -> float:
        return calibrated_tolerance(self.torch_gradient_error)

    @property
    def worst_tolerance(self) -> float:
        return calibrated_tolerance(max(self.torch_errors), WORST_IMAGE_TOLERANCE)

    @property
    def logits_tolerance(self) -> float:
        return calibrated_tolerance(self.torch_logits_error)

    @property
    def passed(self) -> bool:
        return (self.gradient_error <= self.gradient_tolerance and max(self.errors) <= self.worst_tolerance
                and self.logits_error <= self.logits_tolerance and self.update_error <= UPDATE_TOLERANCE)

    def failure_message(self) -> str:
        return (
            f"ONNX Runtime's attack step disagrees with float64 torch.autograd beyond float32 rounding, on "
            f"{len(self.errors)} random images: gradient relative error {self.gradient_error:.2e} on the median "
            f"image and {max(self.errors):.2e} on the worst (torch's own float32 autograd on the same images: "
            f"{self.torch_gradient_error:.2e} and {max(self.torch_errors):.2e}; allowed {self.gradient_tolerance:.2e} "
            f"and {self.worst_tolerance:.2e}, {FLOAT32_ERROR_FACTOR:g} x torch's or at least "
            f"{GRADIENT_TOLERANCE:g} and {WORST_IMAGE_TOLERANCE:g}), logits/loss {self.logits_error:.2e} (torch "
            f"{self.torch_logits_error:.2e}, allowed {self.logits_tolerance:.2e}), the per-pixel update "
            f"{self.update_error:.2e} from its own gradient (allowed {UPDATE_TOLERANCE:g}). That is a bug in a VJP "
            f"rule or in "
            f"the exporter, not rounding; nothing was written. Use --backend torch meanwhile, and report the "
            f"classifier and stand-in"
        )


def per_image_relative_errors(value: np.ndarray | torch.Tensor, reference: torch.Tensor) -> tuple[float, ...]:
    """:func:`relative_error` of each image (row) of a batch."""
    value = torch.as_tensor(np.asarray(value))
    return tuple(relative_error(value[i : i + 1], reference[i : i + 1]) for i in range(reference.shape[0]))


def autograd_reference(
    classifier: nn.Module | list[nn.Module], through: nn.Module | None, x: torch.Tensor, w: torch.Tensor,
    loss: str = "ce", draw: Draw | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalised gradient, logits (N, M, K), per-image loss) of the step's loss by autograd, in the dtype of ``x``
    (the modules are used as they are; pass float64 copies for a float64 reference). With a ``draw``, the robust
    step's: the surrogates see ``apply_draw`` of ``x``, the loss is averaged over the draws and the logits are each
    draw's, (N, M, D, K)."""
    surrogates = as_surrogates(classifier)
    w = w if w.dim() == 3 else w.unsqueeze(1)
    x = x.detach().requires_grad_(True)
    draws = draw.mix.shape[1] if draw is not None else 1
    with torch.enable_grad():
        if draw is None:
            seen = through(x) if through is not None else x
        else:
            seen = apply_draw(x, draw, stand_ins_of(through))
        total, all_logits = None, []
        for index, surrogate in enumerate(surrogates):
            logits = surrogate(seen)
            member = per_image_loss(logits, w[:, index].repeat_interleave(draws, 0), loss)
            member = member.reshape(-1, draws).sum(1) / (draws * len(surrogates))
            total = member if total is None else total + member
            per_draw = logits.reshape(-1, draws, logits.shape[1])
            all_logits.append(per_draw if draw is not None else per_draw[:, 0])
        (gradient,) = torch.autograd.grad(total.sum(), x)
    scale = gradient.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return gradient / scale, torch.stack(all_logits, dim=1).detach(), total.detach()


def check_against_autograd(
    onnx_file: Path, classifier: nn.Module, through: nn.Module | None, inputs: tuple[torch.Tensor, ...],
    layout: StepLayout,
) -> SelfCheck:
    """Run the exported step with ONNX Runtime on ``inputs`` (:func:`~comcloak.export.step_io.example_inputs` of
    :data:`CHECK_BATCH` fresh images, in ``layout.input_names`` order) and measure it, and torch's float32 autograd,
    against float64 autograd (the module docstring's check 3). The caller decides with :attr:`SelfCheck.passed`."""
    ort = import_optional("onnxruntime")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    feed = {name: value.numpy() for name, value in zip(layout.input_names, inputs)}
    x_next, m_next, logits, loss = session.run(list(OUTPUT_NAMES), feed)
    classifier64 = copy.deepcopy(classifier).double()
    through64 = copy.deepcopy(through).double() if through is not None else None
    draw = Draw(*inputs[len(INPUT_NAMES):]) if layout.draws else None
    draw64 = Draw(**{name: value.double() for name, value in draw.tensors().items()}) if draw is not None else None
    gradient, reference_logits, reference_loss = autograd_reference(
        classifier64, through64, inputs[0].double(), inputs[3].double(), layout.loss, draw64
    )
    gradient32, logits32, loss32 = autograd_reference(classifier, through, inputs[0], inputs[3], layout.loss, draw)

    def output_errors(got_logits, got_loss) -> tuple[float, ...]:
        pairs = zip(per_image_relative_errors(got_logits, reference_logits),
                    per_image_relative_errors(np.asarray(got_loss)[:, None], reference_loss[:, None]))
        return tuple(max(pair) for pair in pairs)

    return SelfCheck(
        errors=per_image_relative_errors(m_next, gradient),
        output_errors=output_errors(logits, loss),
        torch_errors=per_image_relative_errors(gradient32, gradient),
        torch_output_errors=output_errors(logits32, loss32),
        update_error=update_error(inputs, torch.from_numpy(x_next), torch.from_numpy(m_next), layout.step_rule),
    )


def update_error(inputs: tuple[torch.Tensor, ...], x_next: torch.Tensor, m_next: torch.Tensor,
                 step_rule: str = SIGN_STEP) -> float:
    """max |x_next - clip(x - alpha·budget·sign(m_next), x0 ∓ eps·budget, [0, 1])| of a step graph's outputs on its
    ``inputs`` (``INPUT_NAMES`` order): the per-pixel update, given the graph's own momentum, so gradient rounding
    cannot move it (``step_rule`` ``scaled``: the scaled momentum instead of its sign, ``kernels.step_direction``)."""
    named = dict(zip(INPUT_NAMES, inputs))
    per_pixel = named["eps"] * named["budget"]
    lower = (named["x0"] - per_pixel).clamp_min(0.0)
    upper = (named["x0"] + per_pixel).clamp_max(1.0)
    stepped = named["x"] - named["alpha"] * named["budget"] * step_direction(m_next, step_rule)
    return float((x_next - torch.minimum(torch.maximum(stepped, lower), upper)).abs().max())


