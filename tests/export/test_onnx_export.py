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
    UnsupportedLayerError,
    read_export_metadata,
    tensorrt_op_violations,
)
from comcloak.export.gradient import AttackStep, ThroughThenClassify, goal_weights, traceable_through
from comcloak.export.onnx_export import INPUT_NAMES, OUTPUT_NAMES, relative_error

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
HEIGHT, WIDTH = 40, 56  # not multiples of 16: the stand-in's static padding is exported too


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
    w = goal_weights(torch.randint(1000, (batch,), generator=generator), 1000, targeted=False)
    inputs = (x, x0, m, w, torch.tensor([4 / 255]), torch.tensor([1 / 255]), torch.tensor([0.9]))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {name: value.numpy() for name, value in zip(INPUT_NAMES, inputs)})
    with torch.no_grad():
        expected = step(*inputs)
    for name, got, want in zip(OUTPUT_NAMES, outputs, expected):
        assert got.shape == tuple(want.shape), name
        if name != "x_next":  # the export's own measure: mean |error| / mean |reference|
            assert relative_error(got, want) <= GRADIENT_TOLERANCE, name
    # x_next moves by ±alpha by the sign of m_next: where m_next is within float noise of 0 the sign may differ
    # (a 2*alpha step); everywhere else it is the same image.
    moved = np.abs(outputs[0] - expected[0].numpy())
    assert moved.max() <= 2 / 255 + 1e-6
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


def test_a_failed_self_check_writes_nothing(models, tmp_path: Path, monkeypatch) -> None:
    import comcloak.export.onnx_export as onnx_export

    classifier, through = models
    monkeypatch.setattr(onnx_export, "GRADIENT_TOLERANCE", 0.0)
    with pytest.raises(ExportError, match="disagrees with torch.autograd"):
        OnnxFromTorch(classifier, through, 32, 32, tmp_path / "step.onnx")()
    assert list(tmp_path.iterdir()) == []


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comcloak.engine", *args], capture_output=True, text=True,
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
