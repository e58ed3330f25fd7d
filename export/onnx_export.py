"""ONNX export of the attack step, with the self-checks every export runs (docs/DESIGN.md §4).

``OnnxFromTorch`` (a lazy loader in Polygraphy's style: build it cheaply, call it to do the work) writes the graph
of :class:`comcloak.export.gradient.AttackStep` for one classifier, one stand-in and one attack-view size, with a
dynamic batch, and returns the file's path. Before the file appears (it is written to a temporary name and
renamed), the export checks itself:

1. ``onnx.checker`` (full check, with shape inference);
2. an op whitelist of what TensorRT's ONNX parser accepts (:data:`TENSORRT_ONNX_OPS`; no Scatter, MaxPool
   without its indices output, Conv/ConvTranspose weights constant);
3. ONNX Runtime against ``torch.autograd.grad`` in float64 on :data:`CHECK_BATCH` fresh random images: the
   normalised gradient (``m_next`` with ``m = 0, mu = 0``), logits and loss. The check is *calibrated*: torch's own
   float32 autograd is measured against the same float64 reference on the same images, and ONNX Runtime passes when
   its typical error (the median over the images) is at most ``max(GRADIENT_TOLERANCE, FLOAT32_ERROR_FACTOR x
   torch's)`` and its worst image at most ``max(WORST_IMAGE_TOLERANCE, FLOAT32_ERROR_FACTOR x torch's worst)``
   (:class:`SelfCheck`).

Each image's error is ``mean|a - b| / mean|b|``. A max-norm error is not usable for gradients of these networks: a
ReLU6 mask or a ComModel clip that flips between float32 and float64 moves a patch of the gradient, so even torch's
own float32 autograd is up to 0.1 from float64 in single pixels. Such flips are rare events: measured at 224x224
through ``comodel:jpeg:50`` with EfficientNet-Lite0 (18 images), an image without one is 2e-6 from float64, an
image with one up to 2.7e-3, in about a third of the images, for torch float32 and ONNX Runtime alike but on
different images (ONNX Runtime fuses and reorders the same arithmetic). A fixed 1e-3 on the batch mean therefore
failed exports of the default stand-in at random; the median over images and the calibrated bounds do not, while
a wrong VJP rule (a ReLU that lets every gradient through) is off by more than 0.1 on every image.

The ONNX packages (``onnx``, ``onnxscript`` for ``torch.onnx``'s exporter, ``onnxruntime`` for the check) are the
``onnx`` extra; they are imported only here, when an export runs.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from comcloak.atomic import atomic_move
from comcloak.attacks.config import EotSettings
from comcloak.attacks.eot import DRAW_INPUTS, Draw, DrawSampler, apply_draw
from comcloak.attacks.loop import as_surrogates, stand_ins_of
from comcloak.attacks.loss import per_image_loss
from comcloak.errors import UserError

from .gates import onnx_translations
from .gradient import AttackStep, RobustAttackStep, ThroughThenClassify, goal_weights, traceable_through

logger = logging.getLogger(__name__)

OPSET = 18
INPUT_NAMES = ("x", "x0", "m", "w", "eps", "alpha", "mu")  # of every step graph; a robust one adds DRAW_INPUTS
OUTPUT_NAMES = ("x_next", "m_next", "logits", "loss")
BATCHED = ("x", "x0", "m", "w", *DRAW_INPUTS)
# The iterate and momentum feed the next step: x_next -> x, m_next -> m (ping-pong buffers in the runners).
CARRIED = {"x_next": "x", "m_next": "m"}
SCALARS = ("eps", "alpha", "mu")


@dataclass(frozen=True)
class StepLayout:
    """What a step graph computes beyond its size: M surrogates, D draws per step over J stand-ins resampled to an
    S x S attacker view (D = 0: the paper's step, no draws), and the loss. Stored in the graph's metadata."""

    surrogates: int = 1
    draws: int = 0
    stand_ins: int = 0
    view_size: int = 224
    loss: str = "ce"
    coded_draws: int = 0

    @property
    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES + (DRAW_INPUTS if self.draws else ())

    def metadata(self) -> dict[str, str]:
        return {"surrogates": str(self.surrogates), "draws": str(self.draws), "stand_ins": str(self.stand_ins),
                "view_size": str(self.view_size), "loss": self.loss, "coded_draws": str(self.coded_draws)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> StepLayout:
        defaults = cls()
        return cls(int(metadata.get("surrogates", defaults.surrogates)), int(metadata.get("draws", defaults.draws)),
                   int(metadata.get("stand_ins", defaults.stand_ins)),
                   int(metadata.get("view_size", defaults.view_size)), metadata.get("loss", defaults.loss),
                   int(metadata.get("coded_draws", defaults.coded_draws)))


def step_tensor_shapes(batch: int, height: int, width: int, classes: int,
                       layout: StepLayout = StepLayout()) -> dict[str, tuple[int, ...]]:
    """The shape of every input and output of the exported step graph, by name: the graph's I/O schema."""
    image = (batch, 3, height, width)
    scores = (batch, layout.surrogates, classes)
    shapes = {"x": image, "x0": image, "m": image, "w": scores, **{name: (1,) for name in SCALARS},
              "x_next": image, "m_next": image, "logits": scores, "loss": (batch,)}
    if layout.draws:
        draws, view = layout.draws, layout.view_size
        shapes.update(pre_h=(batch, draws, height, height), pre_w=(batch, draws, width, width),
                      mix=(batch, draws, layout.stand_ins + 1), post_h=(batch, draws, view, height),
                      post_w=(batch, draws, view, width))
    return shapes
GRADIENT_TOLERANCE = 1e-3  # per image mean |error| / mean |reference|: floor of the bound on the median image
WORST_IMAGE_TOLERANCE = 1e-2  # floor of the bound on the worst image (a float32 flip reaches 2.7e-3, a bug 0.1)
# ONNX Runtime may be this many times further from float64 than torch's own float32 autograd on the same images.
FLOAT32_ERROR_FACTOR = 3.0
CHECK_BATCH = 5  # images of the runtime check: odd (a median), and a batch size the export never saw
METADATA_PREFIX = "comcloak."
EPS_SEMANTICS = (
    "x, x0 in [0,1] NCHW; eps and alpha on the [0,1] scale (comcloak's --eps 5 is 5/255); "
    "w = one-hot target (targeted) or minus one-hot clean label (untargeted); "
    "loss = -sum(w * log_softmax(logits)) per image, always descended: "
    "m_next = mu*m + g/mean|g|, x_next = clip(x - alpha*sign(m_next), max(x0-eps,0), min(x0+eps,1))"
)

# Operators the TensorRT ONNX parser (onnx-tensorrt, TensorRT 10) imports, restricted to what float graphs of
# this kind can need. Anything else in an exported step graph fails the export.
TENSORRT_ONNX_OPS = frozenset({
    "Abs", "Add", "And", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Div", "Equal", "Exp", "Expand", "Flatten", "Floor", "Gather", "Gemm",
    "GlobalAveragePool", "Greater", "GreaterOrEqual", "HardSigmoid", "Identity", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Not", "Or", "Pad", "Pow", "ReduceMax",
    "ReduceMean", "ReduceSum", "Relu", "Reshape", "Round", "Shape", "Sigmoid", "Sign", "Slice", "Softmax", "Split",
    "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "TopK", "Transpose", "Unsqueeze", "Where",
})


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class ExportError(UserError, RuntimeError):
    """An export could not be written or failed one of its self-checks."""


class OnnxDependencyError(UserError, ImportError):
    """The ONNX packages (the ``onnx`` extra) are not installed."""


def import_optional(module: str, extra: str = "onnx") -> Any:
    """Import an optional dependency, or fail with the install command that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise OnnxDependencyError(
            f"{module} is not installed; install comcloak's '{extra}' extra: pip install 'comcloak[{extra}]'"
        ) from None


@dataclass
class ExportReport:
    """What an export wrote and what its self-checks measured (``check`` is None when they were skipped)."""

    path: Path
    metadata: dict[str, str]
    ops: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    check: SelfCheck | None = None

    @property
    def gradient_rel_error(self) -> float:
        """ONNX Runtime's gradient error against float64 autograd on the median check image (nan: not checked)."""
        return self.check.gradient_error if self.check is not None else float("nan")

    @property
    def logits_rel_error(self) -> float:
        """ONNX Runtime's largest logits/loss error against float64 autograd (nan: not checked)."""
        return self.check.logits_error if self.check is not None else float("nan")


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
                and self.logits_error <= self.logits_tolerance)

    def failure_message(self) -> str:
        return (
            f"ONNX Runtime's attack step disagrees with float64 torch.autograd beyond float32 rounding, on "
            f"{len(self.errors)} random images: gradient relative error {self.gradient_error:.2e} on the median "
            f"image and {max(self.errors):.2e} on the worst (torch's own float32 autograd on the same images: "
            f"{self.torch_gradient_error:.2e} and {max(self.torch_errors):.2e}; allowed {self.gradient_tolerance:.2e} "
            f"and {self.worst_tolerance:.2e}, {FLOAT32_ERROR_FACTOR:g} x torch's or at least "
            f"{GRADIENT_TOLERANCE:g} and {WORST_IMAGE_TOLERANCE:g}), logits/loss {self.logits_error:.2e} (torch "
            f"{self.torch_logits_error:.2e}, allowed {self.logits_tolerance:.2e}). That is a bug in a VJP rule or in "
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
    step's: the surrogates see ``apply_draw`` of ``x`` and the loss and logits are averaged over the draws."""
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
            all_logits.append(logits.reshape(-1, draws, logits.shape[1]).mean(1))
        (gradient,) = torch.autograd.grad(total.sum(), x)
    scale = gradient.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return gradient / scale, torch.stack(all_logits, dim=1).detach(), total.detach()


class OnnxFromTorch:
    """Lazy loader: exports the attack step of ``classifier(through(x))`` to ``path`` when called.

    Args:
        classifier: eval-mode classifier module mapping [0, 1] RGB NCHW to logits.
        through: the stand-in module (``make_through``'s ``none`` / ``comodel:...``), or None for none.
        height, width: the attack view's size; the graph is fixed to it (batch is dynamic).
        path: where to write the ``.onnx`` file (one self-contained file, weights included).
        metadata: extra ``key -> value`` strings for the model's metadata (stored as ``comcloak.<key>``);
            the loader adds ``height``, ``width``, ``num_classes``, ``eps_semantics``, ``inputs`` and ``outputs``.
        check: run the self-checks (on by default; an export that fails them is not written).
        seed: seeds the check's random inputs.
        loss: ``ce`` or ``margin`` (:mod:`comcloak.attacks.loss`).
        eot: the robust attack's draws (``eot.draws`` > 0: a :class:`RobustAttackStep` with the draws as inputs).

    ``classifier`` may be an ``nn.ModuleList`` of surrogates (an ensemble, ``w`` then has one row per surrogate).

    Example:
        >>> path = OnnxFromTorch(classifier, through, 224, 224, "step.onnx", {"classifier": "efficientnet_lite0"})()
    """

    def __init__(
        self,
        classifier: nn.Module,
        through: nn.Module | None,
        height: int,
        width: int,
        path: str | os.PathLike,
        metadata: dict[str, str] | None = None,
        check: bool = True,
        seed: int = 0,
        loss: str = "ce",
        eot: EotSettings | None = None,
    ) -> None:
        self.classifier = classifier
        self.loss = loss
        self.eot = eot or EotSettings()
        self.through = through
        self.height, self.width = int(height), int(width)
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self.check = check
        self.seed = seed
        self.report: ExportReport | None = None

    def __call__(self) -> Path:
        self.report = export_attack_step(
            self.classifier, self.through, self.height, self.width, self.path, self.metadata, self.check, self.seed,
            self.loss, self.eot,
        )
        return self.report.path


def _example_inputs(batch: int, height: int, width: int, classes: int, generator: torch.Generator,
                    layout: StepLayout = StepLayout(), eot: EotSettings | None = None):
    x0 = torch.rand(batch, 3, height, width, generator=generator)
    x = (x0 + (torch.rand(x0.shape, generator=generator) - 0.5) * (8 / 255)).clamp(0, 1)
    goal = torch.randint(classes, (batch, layout.surrogates), generator=generator)
    w = goal_weights(goal, classes, targeted=bool(torch.rand(1, generator=generator) < 0.5))
    scalars = (torch.tensor([5 / 255]), torch.tensor([0.5 / 255]), torch.tensor([0.0]))
    inputs = (x, x0, torch.zeros_like(x0), w, *scalars)
    if layout.draws:
        seed = int(torch.randint(2**31, (1,), generator=generator))
        settings = replace(eot or EotSettings(), draws=layout.draws, view_size=layout.view_size)
        inputs += tuple(DrawSampler(settings, layout.stand_ins, seed).sample(batch, height, width).tensors().values())
    return inputs


def export_attack_step(
    classifier: nn.Module,
    through: nn.Module | None,
    height: int,
    width: int,
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    check: bool = True,
    seed: int = 0,
    loss: str = "ce",
    eot: EotSettings | None = None,
) -> ExportReport:
    """Export and self-check the attack step (see :class:`OnnxFromTorch`, which wraps this)."""
    onnx = import_optional("onnx")
    import_optional("onnxscript")
    began = time.perf_counter()
    path = Path(path)
    eot = eot or EotSettings()
    surrogates = [member.eval() for member in as_surrogates(classifier)]
    if eot.draws:
        stand_ins = [traceable_through(stand_in, height, width) for stand_in in stand_ins_of(through)]
        step: nn.Module = RobustAttackStep(surrogates, stand_ins, eot.draws, loss, eot.coded_draws).eval()
        layout = StepLayout(len(surrogates), eot.draws, len(stand_ins), eot.view_size, loss, eot.coded_draws)
    else:
        static_through = traceable_through(through, height, width)
        step = AttackStep([ThroughThenClassify(member, static_through) for member in surrogates], loss).eval()
        layout = StepLayout(len(surrogates), loss=loss)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        classes = int(surrogates[0](torch.zeros(1, 3, height, width)).shape[1])
    example = _example_inputs(2, height, width, classes, generator, layout, eot)
    input_names = layout.input_names
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = {name: ({0: batch} if name in BATCHED else None) for name in input_names}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        scratch_file = Path(scratch) / "step.onnx"
        try:
            with torch.no_grad(), warnings.catch_warnings(), _quiet_logger("torch.onnx"):
                # torch's exporter warns about its own internals (pytree deprecations, axis renaming, absent
                # torchvision ops) on every call
                warnings.simplefilter("ignore", (FutureWarning, UserWarning, DeprecationWarning))
                torch.onnx.export(
                    step, example, str(scratch_file), input_names=list(input_names),
                    output_names=list(OUTPUT_NAMES), opset_version=OPSET, dynamo=True, external_data=False,
                    dynamic_shapes=dynamic, verbose=False, custom_translation_table=onnx_translations(OPSET),
                )
        except Exception as exc:  # the exporter raises many types; the message is what matters
            raise ExportError(f"torch.onnx.export of the attack step failed: {exc}") from exc
        model = onnx.load(str(scratch_file))
        info = {
            "height": str(height),
            "width": str(width),
            "num_classes": str(classes),
            "eps_semantics": EPS_SEMANTICS,
            "inputs": ",".join(input_names),
            **layout.metadata(),
            "outputs": ",".join(OUTPUT_NAMES),
            **{key: str(value) for key, value in (metadata or {}).items()},
        }
        del model.metadata_props[:]
        for key, value in info.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = METADATA_PREFIX + key, value
        onnx.save(model, str(scratch_file))
        ops: dict[str, int] = {}
        for node in model.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        measured: SelfCheck | None = None
        if check:
            try:
                onnx.checker.check_model(str(scratch_file), full_check=True)
            except Exception as exc:
                raise ExportError(f"onnx.checker rejected the exported step graph: {exc}") from exc
            violations = tensorrt_op_violations(model)
            if violations:
                raise ExportError("the exported step graph fails the TensorRT op whitelist: " + "; ".join(violations))
            measured = check_against_autograd(scratch_file, classifier, through, height, width, classes, generator,
                                              layout, eot)
            if not measured.passed:
                raise ExportError(measured.failure_message())
        atomic_move(scratch_file, path)  # the graph cache is read by every later run: whole, or not there
    seconds = time.perf_counter() - began
    report = ExportReport(path, info, ops, seconds, measured)
    logger.info("exported %s (%d nodes) in %.1f s; gradient rel error %.2e (torch float32 %.2e)", path,
                len(model.graph.node), seconds, report.gradient_rel_error,
                measured.torch_gradient_error if measured is not None else float("nan"))
    return report


def check_against_autograd(
    onnx_file: Path, classifier: nn.Module, through: nn.Module | None, height: int, width: int, classes: int,
    generator: torch.Generator, layout: StepLayout = StepLayout(), eot: EotSettings | None = None,
) -> SelfCheck:
    """Run the exported step with ONNX Runtime on :data:`CHECK_BATCH` fresh images and measure it, and torch's
    float32 autograd, against float64 autograd (the module docstring's check 3). The caller decides with
    :attr:`SelfCheck.passed`."""
    ort = import_optional("onnxruntime")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    inputs = _example_inputs(CHECK_BATCH, height, width, classes, generator, layout, eot)
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
    )


def read_export_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``comcloak.*`` metadata of an exported step graph (prefix removed)."""
    onnx = import_optional("onnx")
    model = onnx.load(str(path), load_external_data=False)
    return {
        entry.key[len(METADATA_PREFIX):]: entry.value
        for entry in model.metadata_props
        if entry.key.startswith(METADATA_PREFIX)
    }


def model_fingerprint(*modules: nn.Module | None, extra: dict[str, Any] | None = None) -> str:
    """A hash of the modules' weights, structure (``repr``: types and layer settings) and ``extra``: the cache key
    of an exported graph."""
    digest = hashlib.sha256()
    for module in modules:
        if module is None:
            digest.update(b"none")
            continue
        digest.update(type(module).__qualname__.encode())
        digest.update(repr(module).encode())
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(extra or {}, sort_keys=True).encode())
    return digest.hexdigest()[:16]
