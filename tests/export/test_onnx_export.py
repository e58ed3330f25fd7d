"""ONNX export of the attack step: self-checks, metadata, dynamic batch, the TensorRT whitelist, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import comcloak.models as M
from comcloak.attacks.through import ComModelThrough, make_through
from comcloak.export import (
    GRADIENT_TOLERANCE,
    ExportError,
    OnnxFromTorch,
    SelfCheck,
    UnsupportedLayerError,
    read_export_metadata,
    tensorrt_op_violations,
    vjp,
)
from comcloak.export.gradient import AttackStep, ThroughThenClassify, goal_weights, traceable_through
from comcloak.export.onnx_export import (
    FLOAT32_ERROR_FACTOR,
    INPUT_NAMES,
    OUTPUT_NAMES,
    WORST_IMAGE_TOLERANCE,
    calibrated_tolerance,
    relative_error,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
HEIGHT, WIDTH = 40, 56  # not multiples of 16: the stand-in's static padding is exported too
REAL_VIEW_SIZE = 112  # the real networks' check: the float32 flips it calibrates for occur at any size


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    classifier = M.freeze(M.create_model("tiny_classifier"))
    through = M.freeze(ComModelThrough(M.create_model("comodel_tc_tiny")))
    return classifier, through


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory) -> tuple[Path, OnnxFromTorch]:
    classifier, through = models
    path = tmp_path_factory.mktemp("export") / "step.onnx"
    loader = OnnxFromTorch(classifier, through, HEIGHT, WIDTH, path, {"classifier": "tiny_classifier"})
    assert loader() == path
    return path, loader


def test_export_passes_its_self_checks(exported) -> None:
    path, loader = exported
    report = loader.report
    assert report.gradient_rel_error <= GRADIENT_TOLERANCE and report.logits_rel_error <= GRADIENT_TOLERANCE
    assert report.check.passed and len(report.check.errors) == 5
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert tensorrt_op_violations(model) == []
    assert {"Conv", "ConvTranspose", "Round", "Sign", "Pad"} <= set(report.ops)
    assert not any(node.op_type.startswith("Scatter") for node in model.graph.node)
    assert sorted(p.name for p in path.parent.iterdir()) == ["step.onnx"]  # one file, no temp or external data


def test_metadata_and_io_names(exported) -> None:
    path, _ = exported
    metadata = read_export_metadata(path)
    assert metadata["classifier"] == "tiny_classifier"
    assert (metadata["height"], metadata["width"], metadata["num_classes"]) == (str(HEIGHT), str(WIDTH), "1000")
    assert "5/255" in metadata["eps_semantics"] and "one-hot" in metadata["eps_semantics"]
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    batch_dims = {i.name: i.type.tensor_type.shape.dim[0] for i in model.graph.input}
    assert all(batch_dims[name].dim_param for name in ("x", "x0", "m", "w"))  # symbolic: dynamic batch


@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_step_matches_the_torch_step_at_any_batch(exported, models, batch: int) -> None:
    path, _ = exported
    classifier, through = models
    step = AttackStep(ThroughThenClassify(classifier, traceable_through(through, HEIGHT, WIDTH)))
    generator = torch.Generator().manual_seed(batch)
    x0 = torch.rand(batch, 3, HEIGHT, WIDTH, generator=generator)
    x = (x0 + 0.01 * torch.randn(x0.shape, generator=generator)).clamp(0, 1)
    m = torch.randn(x0.shape, generator=generator)
    w = goal_weights(torch.randint(1000, (batch, 1), generator=generator), 1000, targeted=False)  # (N, 1, K)
    budget = 0.25 + 1.75 * torch.rand(batch, 1, HEIGHT, WIDTH, generator=generator)  # per-pixel factors of eps, alpha
    inputs = (x, x0, m, w, torch.tensor([4 / 255]), torch.tensor([1 / 255]), torch.tensor([0.9]), budget)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {name: value.numpy() for name, value in zip(INPUT_NAMES, inputs)})
    with torch.no_grad():
        expected = step(*inputs)
    for name, got, want in zip(OUTPUT_NAMES, outputs, expected):
        assert got.shape == tuple(want.shape), name
        if name != "x_next":  # the export's own measure: mean |error| / mean |reference|
            assert relative_error(got, want) <= GRADIENT_TOLERANCE, name
    # x_next moves by ±alpha·budget by the sign of m_next: where m_next is within float noise of 0 the sign may
    # differ (a 2*alpha*budget step); everywhere else it is the same image.
    moved = np.abs(outputs[0] - expected[0].numpy())
    assert moved.max() <= 2 * 2 / 255 + 1e-6
    assert (moved > 1e-6).mean() < 1e-3


def test_non_exportable_stand_in_is_refused_and_nothing_is_written(models, tmp_path: Path) -> None:
    classifier, _ = models
    target = tmp_path / "step.onnx"
    with pytest.raises(UnsupportedLayerError, match="cannot be exported"):
        OnnxFromTorch(classifier, make_through("diffjpeg:50"), 32, 32, target)()
    assert list(tmp_path.iterdir()) == []


def test_whitelist_catches_what_tensorrt_rejects() -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    weight = helper.make_tensor_value_info("weight", TensorProto.FLOAT, [1, 1, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("MaxPool", ["x"], ["pooled", "indices"], kernel_shape=[2, 2], name="pool"),
        helper.make_node("Conv", ["pooled", "weight"], ["conv"], name="conv"),  # weights from a graph input
        helper.make_node("ScatterND", ["conv", "idx", "upd"], ["y"], name="scatter"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "bad", [x, weight], [y]))
    problems = tensorrt_op_violations(model)
    assert len(problems) == 3
    assert any("indices" in p for p in problems) and any("ScatterND" in p for p in problems)
    assert any("weights are not a constant" in p for p in problems)


def pass_through_relu_rule(values, gradient):
    """A wrong VJP rule of the kind the self-check exists for: ReLU/ReLU6 letting every gradient through."""
    return [(values.node.args[0], gradient)] if values.wants(0) else []


def break_activation_rules(monkeypatch) -> None:
    for layer in (torch.nn.ReLU, torch.nn.Hardtanh):
        monkeypatch.setitem(vjp._MODULE_RULES, layer, pass_through_relu_rule)


def test_a_wrong_vjp_rule_fails_the_check_and_writes_nothing(models, tmp_path: Path, monkeypatch) -> None:
    classifier, through = models
    break_activation_rules(monkeypatch)
    with pytest.raises(ExportError, match="bug in a VJP rule") as raised:
        OnnxFromTorch(classifier, through, 32, 32, tmp_path / "step.onnx")()
    assert "torch's own float32 autograd" in str(raised.value) and "--backend torch" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_calibrated_tolerance_has_a_floor_and_follows_torch_float32() -> None:
    assert calibrated_tolerance(1e-6) == GRADIENT_TOLERANCE
    assert calibrated_tolerance(1e-3) == pytest.approx(FLOAT32_ERROR_FACTOR * 1e-3)
    assert calibrated_tolerance(1e-6, WORST_IMAGE_TOLERANCE) == WORST_IMAGE_TOLERANCE


def self_check(errors, torch_errors, output=1e-6) -> SelfCheck:
    return SelfCheck(tuple(errors), (output,) * len(errors), tuple(torch_errors), (1e-6,) * len(torch_errors))


def test_self_check_passes_float32_flips_and_fails_bugs() -> None:
    # Measured on the real default step (comodel:jpeg:50, EfficientNet-Lite0, 224x224): images without a float32 flip
    # are ~2e-6 from float64, images with one up to 2.7e-3, in different images for ONNX Runtime and torch. The
    # batch mean of such a draw (here 1.1e-3) failed the old fixed 1e-3; the median and calibrated bounds pass it.
    flips = self_check([2e-6, 2.7e-3, 2e-6, 2.6e-3, 2e-6], [1.4e-5, 1.6e-6, 1.6e-6, 3e-6, 2e-6])
    assert flips.passed and np.mean(flips.errors) > GRADIENT_TOLERANCE
    assert not self_check([0.2] * 5, [1e-5] * 5).passed  # a wrong rule: off on every image
    assert not self_check([2e-6] * 4 + [0.3], [1e-5] * 5).passed  # wrong on one image only (a batch bug)
    assert not self_check([2e-6] * 5, [1e-5] * 5, output=0.05).passed  # wrong logits
    # torch's own float32 error widens the bounds: the check is relative to it, not to an absolute guess
    noisy_torch = self_check([4e-3, 4e-3, 2e-6, 4e-3, 2e-6], [3e-3, 2e-3, 2e-6, 2e-3, 1e-6])
    assert noisy_torch.passed and noisy_torch.gradient_tolerance == pytest.approx(FLOAT32_ERROR_FACTOR * 2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("classifier_name", ["efficientnet_lite0", "mobilenet_v2"])
def test_real_steps_pass_the_calibrated_check_for_every_shipped_comodel(classifier_name, tmp_path: Path,
                                                                        monkeypatch) -> None:
    from comcloak.engine.cloaker import load_classifier
    from comcloak.models.comodel_io import list_shipped_comodels

    try:
        classifier = M.freeze(load_classifier(classifier_name))
    except Exception as error:  # noqa: BLE001 - MobileNetV2's weights are an optional package
        pytest.skip(f"{classifier_name} weights not installed: {error}")
    size = REAL_VIEW_SIZE
    for codec in sorted(list_shipped_comodels()):
        loader = OnnxFromTorch(classifier, make_through(f"comodel:{codec}"), size, size, tmp_path / f"{codec}.onnx")
        loader()
        assert loader.report.check.passed, codec
    break_activation_rules(monkeypatch)
    with pytest.raises(ExportError, match="bug in a VJP rule"):
        OnnxFromTorch(classifier, make_through("comodel:jpeg:50"), size, size, tmp_path / "broken.onnx")()
    assert not (tmp_path / "broken.onnx").exists()


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comcloak", *args], capture_output=True, text=True,
                          timeout=300)


def test_export_cli(tmp_path: Path) -> None:
    output = tmp_path / "step.onnx"
    args = ["export", "--format", "onnx", "-o", str(output), "--classifier", "tiny_classifier", "--through",
            "comodel:jpeg:50", "--height", "32", "--width", "48"]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    assert "TensorRT op whitelist ok" in result.stdout and output.is_file()
    metadata = read_export_metadata(output)
    assert (metadata["through"], metadata["codec"]) == ("comodel:jpeg:50", "jpeg:50")
    again = run_cli(args)
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr
    bad = run_cli(["export", "-o", str(tmp_path / "x.onnx"), "--classifier", "tiny_classifier", "--through",
                   "diffjpeg:50"])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot be exported" in bad.stderr
