"""The ReLU/ReLU6 gradient gate: the same mask as the comparisons, exported as HardSigmoid, exact in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import comcloak.models as M
from comcloak.export import OnnxFromTorch
from comcloak.export.gates import comparison_gate, exact_bound, gradient_gate, onnx_translations
from comcloak.export.onnx_export import OPSET

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# The hard cases: each bound, its float neighbours, the smallest normal float, overflow-sized values, infinities.
BOUNDS = [(0.0, 6.0), (0.0, None), (-1.0, 1.0), (-3.5, 1e6), (None, 2.0)]


def edge_values(bounds: tuple[float | None, float | None]) -> torch.Tensor:
    values = [0.0, -0.0, 1e-30, -1e-30, 1.1754944e-38, -1.1754944e-38, 3.0, -3.0, 1e20, -1e20, 3e38, -3e38,
              float("inf"), float("-inf")]
    for bound in bounds:
        if bound is not None:  # the bound and its neighbours (zero's: the smallest normal floats; module docstring)
            b = np.float32(bound)
            up, down = (np.float32(1.1754944e-38), np.float32(-1.1754944e-38)) if bound == 0 else (
                np.nextafter(b, np.float32(np.inf)), np.nextafter(b, np.float32(-np.inf)))
            values += [float(b), float(up), float(down)]
    return torch.tensor(values, dtype=torch.float32)


class Gate(nn.Module):
    def __init__(self, low: float | None, high: float | None) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gradient_gate(x, self.low, self.high)


def export_gate(low: float | None, high: float | None, example: torch.Tensor, path: Path):  # -> ModelProto
    torch.onnx.export(Gate(low, high).eval(), (example,), str(path), dynamo=True, opset_version=OPSET,
                      custom_translation_table=onnx_translations(OPSET), verbose=False)
    return onnx.load(str(path))


@pytest.mark.parametrize("bounds", BOUNDS)
def test_eager_gate_is_the_open_interval(bounds) -> None:
    x = edge_values(bounds)
    low, high = bounds
    expected = torch.tensor([float((low is None or v > low) and (high is None or v < high)) for v in x.tolist()])
    assert torch.equal(gradient_gate(x, low, high), expected)
    assert torch.equal(comparison_gate(x, low, high), expected)


@pytest.mark.parametrize("bounds", BOUNDS)
def test_exported_gate_is_hardsigmoid_and_exact_in_onnxruntime(bounds, tmp_path: Path) -> None:
    x = edge_values(bounds).reshape(1, 1, 1, -1)
    model = export_gate(*bounds, x, tmp_path / "gate.onnx")
    ops = {node.op_type for node in model.graph.node}
    assert "HardSigmoid" in ops and not ops & {"Greater", "Less", "And", "Cast"}, ops
    session = ort.InferenceSession(str(tmp_path / "gate.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_array_equal(got, gradient_gate(x, *bounds).numpy())


def test_gate_in_blocked_layout_after_a_convolution_is_exact(tmp_path: Path) -> None:
    """ONNX Runtime runs the gate in its NCHWc layout between convolutions: still exactly the comparison mask."""

    class ConvGate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(16, 32, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return gradient_gate(torch.clamp(self.conv(x), 0.0, 6.0), 0.0, 6.0)

    module = ConvGate().eval()
    x = torch.randn(2, 16, 24, 24) * 4
    torch.onnx.export(module, (x,), str(tmp_path / "conv.onnx"), dynamo=True, opset_version=OPSET,
                      custom_translation_table=onnx_translations(OPSET), verbose=False)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(tmp_path / "conv.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    producers = {out: node for node in optimized.graph.node for out in node.output}
    if any(node.domain == "com.microsoft.nchwc" for node in optimized.graph.node):  # a CPU with a blocked layout
        for node in optimized.graph.node:
            if node.op_type == "HardSigmoid":  # fed by the blocked convolution itself, no reorder between
                assert producers[node.input[0]].domain == "com.microsoft.nchwc", producers[node.input[0]].op_type
    y = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        pre = module.conv(x)
    # where the convolution's float32 rounding cannot flip the comparison, the gate must match exactly
    decided = ((pre.abs() > 1e-4) & ((pre - 6).abs() > 1e-4)).numpy()
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_array_equal(y[decided], expected[decided])
    assert decided.mean() > 0.99


def test_bounds_without_an_exact_slope_keep_the_comparisons(tmp_path: Path) -> None:
    assert exact_bound(0.0) and exact_bound(6.0) and exact_bound(-1e-20) and exact_bound(None)
    assert not exact_bound(1e-30) and not exact_bound(1e9)
    x = torch.tensor([[[[0.0, 1e-30, 2e-30, 1e9, 2e9]]]])
    model = export_gate(1e-30, 1e9, x, tmp_path / "gate.onnx")
    ops = {node.op_type for node in model.graph.node}
    assert "HardSigmoid" not in ops and "Greater" in ops
    session = ort.InferenceSession(str(tmp_path / "gate.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_array_equal(got, [[[[0.0, 0.0, 1.0, 0.0, 0.0]]]])


def test_step_graph_gates_relu_with_hardsigmoid(tmp_path: Path) -> None:
    classifier = M.freeze(M.create_model("tiny_classifier"))  # two ReLUs
    loader = OnnxFromTorch(classifier, None, 32, 32, tmp_path / "step.onnx", {})
    loader()
    ops = [node.op_type for node in onnx.load(str(tmp_path / "step.onnx")).graph.node]
    assert ops.count("HardSigmoid") == 2
    assert loader.report.check is not None and loader.report.check.passed
