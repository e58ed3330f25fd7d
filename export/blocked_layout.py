"""ONNX rewrites that keep the face step's PReLU work in ONNX Runtime's blocked (NCHWc) layout (docs/faces.md, "Speed").

ONNX Runtime's CPU provider runs convolutions in a blocked layout (NCHWc) and keeps a tensor there only through the
ops its NCHWc transformer knows: ``Conv``, ``Relu``/``HardSigmoid`` and the other activations, ``Add``/``Mul`` of two
blocked tensors of one shape, ``Concat`` and ``BatchNormalization`` (which becomes a depthwise 1x1 ``Conv``). Any other
op, and any per-channel constant broadcast (``x * slope`` with ``slope`` shaped (1, C, 1, 1)), makes it reorder the
tensor out of the blocked layout and back: SFace's PReLUs, written as ``Relu, Sub, Mul, Add``, left 112 reorders
and 49 back per step, and with their elementwise ops took about a third of a ``faces`` step's kernel time.

Both rewrites express the per-channel work as ``BatchNormalization`` with mean 0 and variance ``1 - BN_EPSILON``, so
``var + epsilon`` is exactly 1 in float32 and the normalisation is ``scale * x + bias``, nothing else:

* :func:`prelu_blocked`, the forward: ``PRelu(x, a) = x + (1 - a) * Relu(-x)`` (``x > 0``: ``x``, exactly; else
  ``x - (1 - a) x = a x``, rounded twice instead of once);
* :func:`gate_factor_blocked`, the VJP's factor: the PReLU rule's ``a + (1 - a) * gate`` (``export/vjp_layers``,
  ``gate`` a ``HardSigmoid``), traced as ``Mul`` and ``Add`` of per-channel constants, becomes one
  ``BatchNormalization(gate; scale 1 - a, bias a)``: the same two roundings.

A PRelu whose slope is not a per-channel (or shared) initialiser keeps :func:`prelu_as_relu`'s form.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

BN_EPSILON = 2.0**-20  # with variance 1 - 2**-20 (exact in float32) the normalisation divides by sqrt(1.0)


def prelu_as_relu(model: Any) -> int:
    """Rewrite every ``PRelu(x, a)`` node of ``model`` (a ModelProto, in place) as ``r + a * (x - r)`` with
    ``r = Relu(x)``: the same value bit for bit (``x > 0``: ``r = x``, ``x - r = 0``; else ``r = 0``, ``a * x``).
    Measured on the ``faces`` preset's graph (real SFace, 224): the same outputs, 0.36 s instead of 0.43 s per step
    (median of 6 rounds, this shared CPU) than ``PRelu``, which ONNX Runtime runs outside its blocked layout.
    :func:`prelu_blocked` goes further; this form is its fallback. Returns how many nodes were rewritten."""
    from onnx import helper

    nodes, rewritten = [], 0
    for node in model.graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        (x, slope), name = node.input, node.name or f"prelu_{rewritten}"
        relu, rest, scaled = f"{name}_relu", f"{name}_rest", f"{name}_scaled"
        nodes += [helper.make_node("Relu", [x], [relu], name=relu),
                  helper.make_node("Sub", [x, relu], [rest], name=rest),
                  helper.make_node("Mul", [rest, slope], [scaled], name=scaled),
                  helper.make_node("Add", [relu, scaled], [node.output[0]], name=f"{name}_sum")]
        rewritten += 1
    _replace_nodes(model, nodes)
    return rewritten


class _Graph:
    """What the rewrites look up in a ModelProto: initialisers as arrays, each value's rank and its consumers."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper, shape_inference

        self.model, self.added = model, []
        self.constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        inferred = shape_inference.infer_shapes(model).graph
        self.ranks = {value.name: len(value.type.tensor_type.shape.dim)
                      for value in [*inferred.value_info, *inferred.input, *inferred.output]
                      if value.type.tensor_type.HasField("shape")}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in model.graph.node:
            for name in node.input:
                self.consumers[name].append(node)

    def per_channel(self, name: str, value: str) -> np.ndarray | None:
        """The initialiser ``name`` as one factor per channel (C,) of the tensor ``value`` it broadcasts against
        (axis 1), or None when it is not an initialiser, not per channel or ``value``'s rank is unknown."""
        constant, rank = self.constants.get(name), self.ranks.get(value)
        if constant is None or rank is None or rank < 2 or constant.ndim > rank or constant.size < 2:
            return None
        dims = (1,) * (rank - constant.ndim) + constant.shape  # right-aligned, as ONNX broadcasts
        if any(size != 1 for axis, size in enumerate(dims) if axis != 1):
            return None
        return constant.reshape(-1).astype(np.float32)

    def batch_norm(self, name: str, x: str, scale: np.ndarray, bias: np.ndarray, output: str) -> Any:
        """A ``BatchNormalization`` node computing ``scale * x + bias`` per channel (module docstring)."""
        from onnx import helper, numpy_helper

        values = {"scale": scale, "bias": bias, "mean": np.zeros_like(scale),
                  "var": np.full_like(scale, 1.0 - BN_EPSILON)}
        for key, value in values.items():
            self.added.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), f"{name}_{key}"))
        return helper.make_node("BatchNormalization", [x, *(f"{name}_{key}" for key in values)], [output],
                                name=name, epsilon=BN_EPSILON)


def _replace_nodes(model: Any, nodes: list[Any], initialisers: list[Any] = ()) -> None:
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(initialisers)


def prelu_blocked(model: Any) -> int:
    """Rewrite every ``PRelu(x, a)`` of ``model`` (in place) whose slope ``a`` is a per-channel initialiser as
    ``Add(BatchNormalization(Relu(BatchNormalization(x; -1)); 1 - a), x)`` (module docstring): two depthwise 1x1
    convolutions in ONNX Runtime's blocked layout (the first with its ``Relu`` fused, the second with the ``Add``),
    where ``Relu, Sub, Mul, Add`` took four passes and three reorders. Returns how many nodes were rewritten; the
    others are left for :func:`prelu_as_relu`.

    Example:
        >>> prelu_blocked(model)   # SFace's step graph: 27
    """
    graph, nodes, rewritten = _Graph(model), [], 0
    for node in model.graph.node:
        slope = graph.per_channel(node.input[1], node.input[0]) if node.op_type == "PRelu" else None
        if slope is None:
            nodes.append(node)
            continue
        (x, _), name = node.input, node.name or f"prelu_{rewritten}"
        ones, zeros = np.ones_like(slope), np.zeros_like(slope)
        nodes += [graph.batch_norm(f"{name}_negate", x, -ones, zeros, f"{name}_negated"),
                  _node("Relu", [f"{name}_negated"], f"{name}_below"),
                  graph.batch_norm(f"{name}_scale", f"{name}_below", 1.0 - slope, zeros, f"{name}_scaled"),
                  _node("Add", [f"{name}_scaled", x], node.output[0], f"{name}_sum")]
        rewritten += 1
    _replace_nodes(model, nodes, graph.added)
    return rewritten


def _node(op: str, inputs: list[str], output: str, name: str | None = None) -> Any:
    from onnx import helper

    return helper.make_node(op, inputs, [output], name=name or output)


def gate_factor_blocked(model: Any) -> int:
    """Rewrite every ``Add(b, Mul(k, HardSigmoid(x)))`` of ``model`` (in place) with per-channel initialisers ``k``
    and ``b`` (the PReLU VJP's ``a + (1 - a) * gate``) as ``BatchNormalization(HardSigmoid(x); k, b)``, which ONNX
    Runtime keeps in its blocked layout with the gate and the product with the gradient. Returns how many."""
    graph, dropped, replaced = _Graph(model), set(), {}
    for node in model.graph.node:
        if node.op_type != "HardSigmoid" or len(graph.consumers[node.output[0]]) != 1:
            continue
        (scale_node,) = graph.consumers[node.output[0]]
        scale = _other_input(scale_node, "Mul", node.output[0])
        if scale is None or len(graph.consumers[scale_node.output[0]]) != 1:
            continue
        (bias_node,) = graph.consumers[scale_node.output[0]]
        bias = _other_input(bias_node, "Add", scale_node.output[0])
        factors = [graph.per_channel(name, node.output[0]) if name is not None else None for name in (scale, bias)]
        if any(factor is None for factor in factors) or factors[0].size != factors[1].size:
            continue
        dropped.add(id(scale_node))
        replaced[id(bias_node)] = graph.batch_norm(f"{bias_node.name or node.name}_factor", node.output[0],
                                                   *factors, bias_node.output[0])
    nodes = [replaced.get(id(node), node) for node in model.graph.node if id(node) not in dropped]
    _replace_nodes(model, nodes, graph.added)
    return len(replaced)


def _other_input(node: Any, op: str, known: str) -> str | None:
    """The input of a two-input ``op`` node that is not ``known``; None when ``node`` is another op."""
    if node.op_type != op or len(node.input) != 2 or known not in node.input:
        return None
    return node.input[1] if node.input[0] == known else node.input[0]


def blocked_layout(model: Any) -> dict[str, int]:
    """All the rewrites, in place on ``model`` (a ModelProto): how many nodes each rewrote.

    Example:
        >>> blocked_layout(model)   # SFace at 224: {'prelu_blocked': 27, 'prelu_as_relu': 0, 'gate_factor_blocked': 29}
    """
    counts = {"prelu_blocked": prelu_blocked(model)}
    counts["prelu_as_relu"] = prelu_as_relu(model)
    counts["gate_factor_blocked"] = gate_factor_blocked(model)
    _drop_unused_initialisers(model)
    return counts


def _drop_unused_initialisers(model: Any) -> None:
    """The initialisers no node reads any more (the rewritten nodes' slopes and constants): ONNX Runtime would warn
    about each when it loads the graph."""
    used = {name for node in model.graph.node for name in node.input} | {out.name for out in model.graph.output}
    kept = [init for init in model.graph.initializer if init.name in used]
    if len(kept) < len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
