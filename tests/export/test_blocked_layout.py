"""The face step's ONNX rewrites into ONNX Runtime's blocked layout (export/blocked_layout.py): the same values up to
float32 rounding, the ops they promise, and the fallbacks where a slope is not per channel."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from comcloak.export.blocked_layout import blocked_layout  # noqa: E402

CHANNELS = 8


def _model(slope: np.ndarray) -> onnx.ModelProto:
    """conv -> PRelu(slope) -> conv, and the PReLU VJP's factor ``a + (1 - a) * HardSigmoid(x)`` times ``g``."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((CHANNELS, CHANNELS, 3, 3)).astype(np.float32)
    a = slope.reshape(1, -1, 1, 1) if slope.size > 1 else slope
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c", "slope"], ["p"], name="prelu"),
             helper.make_node("Conv", ["p", "w"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSigmoid", ["c"], ["gate"], alpha=2.0**126, beta=0.0),
             helper.make_node("Mul", ["one_minus", "gate"], ["scaled"]),
             helper.make_node("Add", ["a", "scaled"], ["factor"]),
             helper.make_node("Mul", ["g", "factor"], ["grad"])]
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(slope, "slope"),
             numpy_helper.from_array((1 - a).astype(np.float32), "one_minus"), numpy_helper.from_array(a, "a")]
    shape = [None, CHANNELS, 10, 10]
    values = {name: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in ("x", "g", "y", "grad")}
    graph = helper.make_graph(nodes, "t", [values["x"], values["g"]], [values["y"], values["grad"]], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.mark.parametrize("shared", [False, True])
def test_the_rewrites_keep_the_values_and_drop_prelu(shared: bool) -> None:
    rng = np.random.default_rng(1)
    # SFace's slopes lie in -0.81..1.12; a per-channel slope is shaped (C, 1, 1), as torch exports nn.PReLU's.
    slope = np.array([0.25], np.float32) if shared else rng.uniform(-0.8, 1.1, (CHANNELS, 1, 1)).astype(np.float32)
    feed = {name: rng.standard_normal((2, CHANNELS, 10, 10)).astype(np.float32) for name in "xg"}
    model = _model(slope)
    expected = _run(model, feed)
    counts = blocked_layout(model)
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    # A shared slope is not per channel: it keeps the Relu, Sub, Mul, Add form, and the gate its Mul and Add.
    assert counts == ({"prelu_blocked": 0, "prelu_as_relu": 1, "gate_factor_blocked": 0} if shared else
                      {"prelu_blocked": 1, "prelu_as_relu": 0, "gate_factor_blocked": 1})
    assert "PRelu" not in ops and ops.count("BatchNormalization") == (0 if shared else 3)
    for got, want in zip(_run(model, feed), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
