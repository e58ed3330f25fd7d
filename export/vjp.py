"""VJP rules over ``torch.fx`` graphs: the input gradient of a traced model as ordinary forward ops (docs/DESIGN.md §4).

Inference runtimes (ONNX Runtime, TensorRT) have no autograd. For every node kind a model's traced graph contains,
a rule here emits the forward ops that turn the gradient of the node's output into gradients of its inputs:
Conv2d -> conv_transpose2d with the same weights (a conv with the flipped kernel when the stride is 1),
ConvTranspose2d -> conv2d, eval BatchNorm -> a per-channel scale, ReLU/ReLU6/clamp -> a mask multiply (ReLU's
and ReLU6's as :func:`~comcloak.export.gates.gradient_gate`, which exports as HardSigmoid),
MaxPool -> per-tap "first maximum" masks scattered back by a one-hot ConvTranspose (no Scatter, no pooling
indices), cat -> slices, add -> pass-through, pooling/linear -> their transposes, padding -> slices (replicate
padding also folds the border back), and the transform-coding ComModel's quantiser ops (exp, pow, mul,
round/detach).

Rules are registered per module type (``call_module``), function (``call_function``) or tensor method name
(``call_method``) with :func:`register_vjp`; :func:`find_rule` fails at build time with the layer named when a node
has none. Each rule receives a :class:`NodeValues` (the node, its module, its evaluated arguments and output) and the
gradient of the node's output, and returns ``(input_node, gradient)`` pairs for the inputs that need one.

The rules live beside this registry and register when it is imported (the end of this module): layers with weights,
pooling and padding in :mod:`comcloak.export.vjp_layers`; activations, arithmetic and structure in
:mod:`comcloak.export.vjp_elementwise`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from comcloak.errors import UserError


class UnsupportedLayerError(UserError, ValueError):
    """A traced model contains a layer (module, function or method) or a layer setting with no VJP rule."""


@dataclass
class NodeValues:
    """What a rule sees of one forward node: its evaluated arguments, output and the inputs that need a gradient."""

    node: fx.Node
    module: nn.Module | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any
    needs_grad: set[fx.Node] = field(default_factory=set)
    constants: dict[str, torch.Tensor] = field(default_factory=dict)  # from the module's preparer, if any

    def wants(self, position: int) -> bool:
        """Whether positional argument ``position`` is a graph node on the input's gradient path."""
        if position >= len(self.node.args):
            return False
        arg = self.node.args[position]
        return isinstance(arg, fx.Node) and arg in self.needs_grad

    def arg(self, position: int, name: str, default: Any = None) -> Any:
        """Evaluated argument by position, else by keyword, else ``default``."""
        if position < len(self.args):
            return self.args[position]
        return self.kwargs.get(name, default)

    def describe(self) -> str:
        return describe_node(self.node, self.module)


VjpRule = Callable[[NodeValues, torch.Tensor], list[tuple[fx.Node, torch.Tensor]]]

_MODULE_RULES: dict[type, VjpRule] = {}
_FUNCTION_RULES: dict[Callable, VjpRule] = {}
_METHOD_RULES: dict[str, VjpRule] = {}
# Tensors a module's rule needs that derive from its frozen weights alone (a transposed kernel, ...). They are
# computed once, when the gradient graph is built, so that exports see constants (TensorRT needs Conv weights to
# be initializers) instead of ops on the weights.
_PREPARERS: dict[type, Callable[[nn.Module], dict[str, torch.Tensor]]] = {}


def register_preparer(module_type: type) -> Callable:
    """Register ``fn(module) -> {name: tensor}``, run once per layer at build time (decorator)."""

    def decorate(fn: Callable[[nn.Module], dict[str, torch.Tensor]]) -> Callable:
        _PREPARERS[module_type] = fn
        return fn

    return decorate


def prepare_constants(module: nn.Module | None) -> dict[str, torch.Tensor]:
    """The build-time constants of a layer's rule (empty for most layers)."""
    if module is None:
        return {}
    for cls in type(module).__mro__:
        if cls in _PREPARERS:
            return _PREPARERS[cls](module)
    return {}


def register_vjp(*targets: type | Callable | str) -> Callable[[VjpRule], VjpRule]:
    """Register a rule for module types, functions or tensor-method names (decorator)."""

    def decorate(rule: VjpRule) -> VjpRule:
        for target in targets:
            if isinstance(target, str):
                _METHOD_RULES[target] = rule
            elif isinstance(target, type) and issubclass(target, nn.Module):
                _MODULE_RULES[target] = rule
            else:
                _FUNCTION_RULES[target] = rule
        return rule

    return decorate


def describe_node(node: fx.Node, module: nn.Module | None = None) -> str:
    """A human-readable name for a node: ``layer1.0.conv1 (Conv2d)``, ``torch.cat``, ``method 'clamp'``."""
    if node.op == "call_module":
        return f"{node.target} ({type(module).__name__})"
    if node.op == "call_function":
        target = node.target
        module_name = getattr(target, "__module__", None) or ""
        return f"{module_name}.{getattr(target, '__name__', repr(target))}".lstrip(".")
    if node.op == "call_method":
        return f"method {node.target!r} (node {node.name})"
    return f"{node.op} {node.target}"


def supported_layers() -> list[str]:
    """Names of everything with a VJP rule, for error messages and docs."""
    names = [cls.__name__ for cls in _MODULE_RULES]
    names += [getattr(fn, "__name__", repr(fn)) for fn in _FUNCTION_RULES]
    names += [f".{name}()" for name in _METHOD_RULES]
    return sorted(set(names))


def find_rule(node: fx.Node, module: nn.Module | None) -> VjpRule:
    """The rule for ``node``; raises :class:`UnsupportedLayerError` naming the layer when there is none."""
    rule: VjpRule | None = None
    if node.op == "call_module":
        for cls in type(module).__mro__:
            if cls in _MODULE_RULES:
                rule = _MODULE_RULES[cls]
                break
    elif node.op == "call_function":
        rule = _FUNCTION_RULES.get(node.target)
    elif node.op == "call_method":
        rule = _METHOD_RULES.get(node.target)
    if rule is None:
        raise UnsupportedLayerError(
            f"no VJP rule for layer {describe_node(node, module)}; supported: {', '.join(supported_layers())}"
        )
    return rule



def only_input(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    """The gradient for the first argument, when it needs one."""
    return [(values.node.args[0], gradient)] if values.wants(0) else []



def rules_for(graph: fx.GraphModule, nodes: set[fx.Node] | None = None) -> Iterator[tuple[fx.Node, VjpRule]]:
    """Each computing node of ``graph`` (of ``nodes`` when given) with its rule; raises UnsupportedLayerError at the
    first node without one."""
    modules = dict(graph.named_modules())
    for node in graph.graph.nodes:
        if nodes is not None and node not in nodes:
            continue
        if node.op in ("call_module", "call_function", "call_method"):
            yield node, find_rule(node, modules.get(node.target) if node.op == "call_module" else None)


# The rules register themselves with the decorators above when their modules are imported: last, so that the
# registry they import from is complete.
from . import vjp_elementwise, vjp_layers  # noqa: E402, F401
