"""ONNX export of the face step (:mod:`comcloak.export.face_step`) and its calibrated self-check (docs/faces.md).

:func:`export_face_step` traces :class:`~comcloak.export.face_step.FaceAttackStep` for one recogniser, one stand-in
and one working-view size (dynamic batch) with the classifier step's exporter (``onnx_export``), stamps its layout
in the metadata (``kind`` = ``face``) and, before the file appears, checks it:

1. ``onnx.checker`` (full, with shape inference);
2. its operators: the classifier step's TensorRT whitelist plus the warp's ``GatherElements``, its transpose's
   ``ScatterElements`` and the norm's ``ReduceL2`` (:data:`FACE_EXTRA_OPS`); no GridSample;
3. ONNX Runtime against float64 autograd of the torch reference (``apply_draw``, the warp from the same taps, the
   recogniser, the cosine, the loss) on :data:`~comcloak.export.self_check.CHECK_BATCH` random working views with
   real jitter and mirror draws, *calibrated* as the classifier step's (``SelfCheck``): the torch reference's own
   float32 error against float64 on the same inputs sets the scale.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from comcloak.atomic import atomic_move
from comcloak.attacks.config import EotSettings
from comcloak.attacks.eot import DRAW_INPUTS, Draw, DrawSampler, apply_draw
from comcloak.attacks.faces.settings import FaceSettings
from comcloak.attacks.faces.view import IdentityView
from comcloak.attacks.loop import stand_ins_of
from comcloak.attacks.loss import goal_weights, per_image_loss
from comcloak.models.faces import ARCFACE_SIZE
from comcloak.models.faces.align import template

from .blocked_layout import blocked_layout
from .face_step import FACE_INPUTS, FaceAttackStep, FaceStepLayout, identity_reference, warp_inputs
from .gradient import traceable_through
from .onnx_export import ExportError, ExportReport, _stamp_metadata, _trace
from .optional import import_optional
from .self_check import CHECK_BATCH, CHECK_SEED, SelfCheck, per_image_relative_errors, tensorrt_op_violations
from .step_io import EPS_SEMANTICS, OUTPUT_NAMES, STEP_INPUTS, StepSpec

# Beyond the classifier step's whitelist: the warp's gather and its scatter-add transpose and the embedding's norm
# (ONNX Runtime CPU kernels; whether TensorRT's parser takes the graph is not tested).
FACE_EXTRA_OPS = ("GatherElements", "ScatterElements", "ReduceL2")
GALLERY = 1  # the face cloak's gallery: the clean embedding
CHECK_FACE_SCALE = 0.6  # the check's face: the template scaled to this fraction of the view, centred


def face_step_module(recogniser: nn.Module, through: nn.Module | None, size: int,
                     spec: StepSpec) -> tuple[FaceAttackStep, FaceStepLayout]:
    """The eval-mode face step for ``size`` x ``size`` working views and its graph's layout."""
    stand_ins = [traceable_through(stand_in, size, size) for stand_in in stand_ins_of(through)]
    step = FaceAttackStep(recogniser.eval(), stand_ins, spec.eot.draws, spec.loss, spec.eot.coded_draws,
                          step_rule=spec.step_rule).eval()
    with torch.no_grad():
        embedding = int(recogniser(torch.zeros(1, 3, ARCFACE_SIZE, ARCFACE_SIZE)).shape[1])
    base = spec.layout(1, len(stand_ins))
    layout = FaceStepLayout(base.surrogates, base.draws, base.stand_ins, base.view_size, base.loss,
                            base.coded_draws, embedding, ARCFACE_SIZE, step_rule=base.step_rule)
    return step, layout


def check_view(recogniser: nn.Module, size: int, seed: int) -> IdentityView:
    """An :class:`IdentityView` of a face filling :data:`CHECK_FACE_SCALE` of a ``size`` view, with the default
    jitter and mirror draws (the self-check's and the tests' alignment draws)."""
    marks = template(ARCFACE_SIZE, torch.float64) * (CHECK_FACE_SCALE * size / ARCFACE_SIZE)
    marks = marks + (1 - CHECK_FACE_SCALE) * size / 2
    return IdentityView(recogniser, marks, size, torch.zeros(GALLERY, 1), FaceSettings(), seed=seed)


def face_example_inputs(batch: int, size: int, generator: torch.Generator, layout: FaceStepLayout,
                        eot: EotSettings, recogniser: nn.Module) -> tuple[torch.Tensor, ...]:
    """Random inputs of a face step graph in ``layout.input_names`` order: views near each other within 8/255, the
    untargeted goal, fresh draws, unit gallery embeddings and jittered, partly mirrored alignment taps."""
    x0 = torch.rand(batch, 3, size, size, generator=generator)
    x = (x0 + (torch.rand(x0.shape, generator=generator) - 0.5) * (8 / 255)).clamp(0, 1)
    w = goal_weights(torch.zeros(batch, 1, dtype=torch.long), GALLERY, targeted=False)
    scalars = (torch.tensor([12 / 255]), torch.tensor([1 / 255]), torch.tensor([0.0]))
    seed = int(torch.randint(2**31, (1,), generator=generator))
    settings = replace(eot, draws=layout.draws, view_size=layout.view_size)
    draw = DrawSampler(settings, layout.stand_ins, seed).sample(batch, size, size)
    gallery = torch.nn.functional.normalize(torch.randn(batch, GALLERY, layout.embedding, generator=generator), dim=-1)
    index, weight = warp_inputs(check_view(recogniser, size, seed), batch * layout.draws, size)
    taps = (batch, layout.draws, *index.shape[1:])
    budget = 0.5 + 0.5 * torch.rand(batch, 1, size, size, generator=generator)  # a texture-shaped budget's range
    return (x, x0, torch.zeros_like(x0), w, *scalars, *draw.tensors().values(), gallery, index.reshape(taps),
            weight.reshape(taps), budget)


def face_autograd_reference(recogniser: nn.Module, through: nn.Module | None, inputs: tuple[torch.Tensor, ...],
                            layout: FaceStepLayout, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """(normalised gradient, cosines (N, 1, K), loss (N,)) of the face step's loss by autograd, in ``dtype``, on
    copies of the modules: what the torch loop computes (``apply_draw``, the warp from the taps, the recogniser,
    the cosine to the gallery, the loss averaged over the draws)."""
    named = dict(zip(layout.input_names, inputs))
    recogniser = copy.deepcopy(recogniser).to(dtype)
    through = copy.deepcopy(through).to(dtype) if through is not None else None
    draw = Draw(**{name: named[name].to(dtype) for name in DRAW_INPUTS})
    x = named["x"].detach().to(dtype).requires_grad_(True)  # a copy: not the caller's input
    with torch.enable_grad():
        seen = apply_draw(x, draw, stand_ins_of(through))
        cosines = identity_reference(recogniser, seen, named["gallery"].to(dtype), named["warp_index"],
                                     named["warp_weight"].to(dtype))
        goal = named["w"].to(dtype).reshape(x.shape[0], 1, -1).expand(-1, layout.draws, -1).reshape(cosines.shape)
        loss = per_image_loss(cosines, goal, layout.loss).reshape(-1, layout.draws).sum(1) / layout.draws
        (gradient,) = torch.autograd.grad(loss.sum(), x)
    scale = gradient.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    mean_cosines = cosines.detach().reshape(x.shape[0], layout.draws, -1).mean(1).unsqueeze(1)
    return gradient / scale, mean_cosines, loss.detach()


def check_face_step(onnx_file: Path, recogniser: nn.Module, through: nn.Module | None,
                    inputs: tuple[torch.Tensor, ...], layout: FaceStepLayout) -> SelfCheck:
    """ONNX Runtime's face step and torch's float32 reference, each against the float64 reference on ``inputs``
    (``m = 0``, ``mu = 0``: ``m_next`` is the normalised gradient); decide with :attr:`SelfCheck.passed`."""
    ort = import_optional("onnxruntime")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    feed = {name: value.numpy() for name, value in zip(layout.input_names, inputs)}
    _, m_next, cosines, loss = session.run(list(OUTPUT_NAMES), feed)
    gradient, reference_cosines, reference_loss = face_autograd_reference(recogniser, through, inputs, layout,
                                                                          torch.float64)
    gradient32, cosines32, loss32 = face_autograd_reference(recogniser, through, inputs, layout, torch.float32)

    def output_errors(got_cosines, got_loss) -> tuple[float, ...]:
        pairs = zip(per_image_relative_errors(got_cosines, reference_cosines),
                    per_image_relative_errors(torch.as_tensor(got_loss)[:, None], reference_loss[:, None]))
        return tuple(max(pair) for pair in pairs)

    return SelfCheck(errors=per_image_relative_errors(m_next, gradient), output_errors=output_errors(cosines, loss),
                     torch_errors=per_image_relative_errors(gradient32, gradient),
                     torch_output_errors=output_errors(cosines32, loss32))


def face_op_violations(model: object) -> list[str]:
    """The TensorRT whitelist's complaints about a face step graph, less the warp's :data:`FACE_EXTRA_OPS`."""
    return [problem for problem in tensorrt_op_violations(model)
            if not any(problem.startswith(f"{op} node") for op in FACE_EXTRA_OPS)]


def export_face_step(recogniser: nn.Module, through: nn.Module | None, size: int, path: str | os.PathLike,
                     spec: StepSpec, metadata: dict[str, str] | None = None, check: bool = True) -> ExportReport:
    """Export the face step for ``size`` x ``size`` working views to ``path`` and self-check it (module docstring).

    Args:
        recogniser: the surrogate recogniser (eval mode, float32, CPU).
        through: the stand-in (``make_through(config.through)``), or None.
        size: the working view's side (``FaceSettings.work_size``).
        path: the ``.onnx`` file (written whole, or not at all).
        spec: the loss and the draws (``StepSpec.from_config(face_config.attack)``; draws must be > 0).
        metadata: extra ``comcloak.*`` metadata; check: run the self-checks (an export failing one is not written).

    Example:
        >>> report = export_face_step(create_face_model("sface"), None, 224, "face.onnx", StepSpec("identity", eot))
    """
    if spec.eot.draws < 1:
        raise ExportError("the face step needs the loop's draws (draws >= 1)")
    onnx = import_optional("onnx")
    import_optional("onnxscript")
    began = time.perf_counter()
    path = Path(path)
    step, layout = face_step_module(recogniser, through, size, spec)
    generator = torch.Generator().manual_seed(CHECK_SEED)
    example = face_example_inputs(2, size, generator, layout, spec.eot, recogniser)
    info = {"height": str(size), "width": str(size), "num_classes": str(GALLERY), "eps_semantics": EPS_SEMANTICS,
            "inputs": ",".join(layout.input_names), **layout.metadata(), "outputs": ",".join(OUTPUT_NAMES),
            **{key: str(value) for key, value in (metadata or {}).items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        scratch_file = Path(scratch) / "face-step.onnx"
        _trace(step, example, layout, scratch_file)
        traced = onnx.load(str(scratch_file))
        if any(blocked_layout(traced).values()):
            onnx.save(traced, str(scratch_file))
        model = _stamp_metadata(onnx, scratch_file, info)
        ops: dict[str, int] = {}
        for node in model.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        measured = None
        if check:
            measured = _check(onnx, scratch_file, model, (recogniser, through), layout,
                              face_example_inputs(CHECK_BATCH, size, generator, layout, spec.eot, recogniser))
        atomic_move(scratch_file, path)
    return ExportReport(path, info, ops, time.perf_counter() - began, measured)


def _check(onnx: object, onnx_file: Path, model: object, modules: tuple[nn.Module, nn.Module | None],
           layout: FaceStepLayout, inputs: tuple[torch.Tensor, ...]) -> SelfCheck:
    try:
        onnx.checker.check_model(str(onnx_file), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported face step graph: {exc}") from exc
    violations = face_op_violations(model)
    if violations:
        raise ExportError("the exported face step graph has unexpected operators: " + "; ".join(violations))
    measured = check_face_step(onnx_file, *modules, inputs, layout)
    if not measured.passed:
        raise ExportError("face step: " + measured.failure_message())
    return measured


__all__ = ["FACE_EXTRA_OPS", "FACE_INPUTS", "STEP_INPUTS", "check_face_step", "export_face_step",
           "face_example_inputs", "face_step_module"]
