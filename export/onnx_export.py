"""ONNX export of the attack step (docs/DESIGN.md §4).

``OnnxFromTorch`` (a lazy loader in Polygraphy's style: build it cheaply, call it to do the work) writes the graph
of :class:`comcloak.export.gradient.AttackStep` (or, with draws, :class:`~comcloak.export.gradient.RobustAttackStep`)
for one classifier, one stand-in and one attack-view size, with a dynamic batch, and returns the file's path. What
the step computes beyond its models is one :class:`~comcloak.export.step_io.StepSpec` (the loss and the draws). The
graph's I/O schema is :mod:`comcloak.export.step_io`'s. Before the file appears (it is written to a temporary name
and renamed), the export runs the self-checks of :mod:`comcloak.export.self_check` (``onnx.checker``, TensorRT's op
whitelist, ONNX Runtime against float64 autograd); an export that fails one is not written.

The ONNX packages (``onnx``, ``onnxscript`` for ``torch.onnx``'s exporter, ``onnxruntime`` for the check) are the
``onnx`` extra; they are imported only here, when an export runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from comcloak.atomic import atomic_move
from comcloak.attacks.loop import as_surrogates, stand_ins_of
from comcloak.errors import UserError

from .gates import onnx_translations
from .gradient import AttackStep, RobustAttackStep, ThroughThenClassify, traceable_through
from .optional import OnnxDependencyError, import_optional  # noqa: F401 - re-exported
from .self_check import (  # noqa: F401 - re-exported: the export's public names and the tests' imports
    CHECK_BATCH,
    CHECK_SEED,
    FLOAT32_ERROR_FACTOR,
    GRADIENT_TOLERANCE,
    TENSORRT_ONNX_OPS,
    WORST_IMAGE_TOLERANCE,
    SelfCheck,
    autograd_reference,
    calibrated_tolerance,
    check_against_autograd,
    per_image_relative_errors,
    relative_error,
    tensorrt_op_violations,
)
from .step_io import (  # noqa: F401 - re-exported: the graph's I/O schema, imported from here by runners and tests
    BATCHED,
    CARRIED,
    EPS_SEMANTICS,
    INPUT_NAMES,
    LOGITS_PER_DRAW,
    METADATA_PREFIX,
    OUTPUT_NAMES,
    SCALARS,
    StepLayout,
    StepSpec,
    example_inputs,
    read_export_metadata,
    step_tensor_shapes,
)

logger = logging.getLogger(__name__)

OPSET = 18


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


class OnnxFromTorch:
    """Lazy loader: exports the attack step of ``classifier(through(x))`` to ``path`` when called.

    Args:
        classifier: eval-mode classifier module mapping [0, 1] RGB NCHW to logits.
        through: the stand-in module (``make_through``'s ``none`` / ``comodel:...``), or None for none.
        height, width: the attack view's size; the graph is fixed to it (batch is dynamic).
        path: where to write the ``.onnx`` file (one self-contained file, weights included).
        metadata: extra ``key -> value`` strings for the model's metadata (stored as ``comcloak.<key>``);
            the loader adds ``height``, ``width``, ``num_classes``, ``eps_semantics``, ``inputs`` and ``outputs``.
        check: run the self-checks (on by default; an export that fails them is not written). Their random
            inputs are seeded with :data:`~comcloak.export.self_check.CHECK_SEED`.
        spec: the loss and the robust attack's draws (:class:`StepSpec`, e.g. ``StepSpec.from_config(config)``;
            ``spec.eot.draws`` > 0: a :class:`RobustAttackStep` with the draws as inputs). Default: ``ce``, no draws.

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
        spec: StepSpec | None = None,
    ) -> None:
        self.classifier = classifier
        self.spec = spec or StepSpec()
        self.through = through
        self.height, self.width = int(height), int(width)
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self.check = check
        self.report: ExportReport | None = None

    def __call__(self) -> Path:
        self.report = export_attack_step(
            self.classifier, self.through, self.height, self.width, self.path, self.metadata, self.check, self.spec,
        )
        return self.report.path


def step_module(
    classifier: nn.Module, through: nn.Module | None, height: int, width: int, spec: StepSpec
) -> tuple[nn.Module, StepLayout]:
    """The eval-mode step module the export traces for ``height`` x ``width`` views, and its graph's layout."""
    surrogates = [member.eval() for member in as_surrogates(classifier)]
    if spec.eot.draws:
        stand_ins = [traceable_through(stand_in, height, width) for stand_in in stand_ins_of(through)]
        step: nn.Module = RobustAttackStep(surrogates, stand_ins, spec.eot.draws, spec.loss, spec.eot.coded_draws,
                                           spec.step_rule)
        return step.eval(), spec.layout(len(surrogates), len(stand_ins))
    static_through = traceable_through(through, height, width)
    step = AttackStep([ThroughThenClassify(member, static_through) for member in surrogates], spec.loss,
                      spec.step_rule)
    return step.eval(), spec.layout(len(surrogates), 0)


def _dynamic_shapes(layout: StepLayout) -> dict[str, Any]:
    """``torch.export``'s dynamic shapes, keyed by the step's ``forward`` parameters: the batch dimension of the
    batched inputs; a robust step's draws come as its ``*draw`` tuple, in :data:`DRAW_INPUTS` order."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The step's named parameters: INPUT_NAMES (the classifier step), or STEP_INPUTS (the face step: its per-pixel
    # budget is one of its trailing inputs).
    named = [name for name in layout.input_names[:len(INPUT_NAMES)] if name in INPUT_NAMES]
    dynamic: dict[str, Any] = {name: ({0: batch} if name in BATCHED else None) for name in named}
    if layout.draws:
        dynamic["draw"] = tuple({0: batch} for _ in layout.input_names[len(named):])
    return dynamic


def _trace(step: nn.Module, example: tuple[torch.Tensor, ...], layout: StepLayout, onnx_file: Path) -> None:
    """``torch.onnx.export`` of ``step`` on ``example`` to ``onnx_file`` with the schema's names and a dynamic batch."""
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet_logger("torch.onnx"):
            # torch's exporter warns about its own internals (pytree deprecations, axis renaming, absent
            # torchvision ops) on every call
            warnings.simplefilter("ignore", (FutureWarning, UserWarning, DeprecationWarning))
            torch.onnx.export(
                step, example, str(onnx_file), input_names=list(layout.input_names),
                output_names=list(OUTPUT_NAMES), opset_version=OPSET, dynamo=True, external_data=False,
                dynamic_shapes=_dynamic_shapes(layout), verbose=False,
                custom_translation_table=onnx_translations(OPSET),
            )
    except Exception as exc:  # the exporter raises many types; the message is what matters
        raise ExportError(f"torch.onnx.export of the attack step failed: {exc}") from exc


def _stamp_metadata(onnx: Any, onnx_file: Path, info: dict[str, str]) -> Any:
    """Replace the file's metadata by ``info`` (each key prefixed :data:`METADATA_PREFIX`); returns the model."""
    model = onnx.load(str(onnx_file))
    del model.metadata_props[:]
    for key, value in info.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, value
    onnx.save(model, str(onnx_file))
    return model


def _self_check(onnx: Any, onnx_file: Path, model: Any, reference: tuple[nn.Module, nn.Module | None],
                inputs: tuple[torch.Tensor, ...], layout: StepLayout) -> SelfCheck:
    """The three self-checks of :mod:`comcloak.export.self_check` on the written graph; raises ExportError."""
    try:
        onnx.checker.check_model(str(onnx_file), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported step graph: {exc}") from exc
    violations = tensorrt_op_violations(model)
    if violations:
        raise ExportError("the exported step graph fails the TensorRT op whitelist: " + "; ".join(violations))
    measured = check_against_autograd(onnx_file, *reference, inputs, layout)
    if not measured.passed:
        raise ExportError(measured.failure_message())
    return measured


def export_attack_step(
    classifier: nn.Module,
    through: nn.Module | None,
    height: int,
    width: int,
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    check: bool = True,
    spec: StepSpec | None = None,
) -> ExportReport:
    """Export and self-check the attack step (see :class:`OnnxFromTorch`, which wraps this)."""
    onnx = import_optional("onnx")
    import_optional("onnxscript")
    began = time.perf_counter()
    path = Path(path)
    spec = spec or StepSpec()
    step, layout = step_module(classifier, through, height, width, spec)
    generator = torch.Generator().manual_seed(CHECK_SEED)
    with torch.no_grad():
        classes = int(as_surrogates(classifier)[0](torch.zeros(1, 3, height, width)).shape[1])
    example = example_inputs(2, height, width, classes, generator, layout, spec.eot)
    info = {
        "height": str(height),
        "width": str(width),
        "num_classes": str(classes),
        "eps_semantics": EPS_SEMANTICS,
        "inputs": ",".join(layout.input_names),
        **layout.metadata(),
        "outputs": ",".join(OUTPUT_NAMES),
        **({LOGITS_PER_DRAW: "1"} if layout.draws else {}),  # (N, M, D, K): what per-photo stopping reads
        **{key: str(value) for key, value in (metadata or {}).items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        scratch_file = Path(scratch) / "step.onnx"
        _trace(step, example, layout, scratch_file)
        model = _stamp_metadata(onnx, scratch_file, info)
        ops: dict[str, int] = {}
        for node in model.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        measured: SelfCheck | None = None
        if check:
            inputs = example_inputs(CHECK_BATCH, height, width, classes, generator, layout, spec.eot)
            measured = _self_check(onnx, scratch_file, model, (classifier, through), inputs, layout)
        atomic_move(scratch_file, path)  # the graph cache is read by every later run: whole, or not there
    seconds = time.perf_counter() - began
    report = ExportReport(path, info, ops, seconds, measured)
    logger.info("exported %s (%d nodes) in %.1f s; gradient rel error %.2e (torch float32 %.2e)", path,
                len(model.graph.node), seconds, report.gradient_rel_error,
                measured.torch_gradient_error if measured is not None else float("nan"))
    return report


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
