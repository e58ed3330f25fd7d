"""Every registered model must trace with torch.fx into the small op set the export's VJP rules cover."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import comcloak.models as M

ALLOWED_MODULES = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Linear,
    nn.ZeroPad2d,
)
# sub/truediv: the in-model normalisation by constant buffers.
ALLOWED_FUNCTIONS = {torch.cat, torch.flatten, operator.add, operator.sub, operator.truediv}
INPUT = {"comodel": (64, 96), "comodel_tiny": (64, 96)}
# The transform-coding ComModel also needs plane slicing, the learned quantiser (exp, neg, mul, round with a
# detached straight-through term, cubic pow) and the replicate padding of its chroma upsampling; the export's VJP
# rules cover them (tests/export/test_gradient.py checks every shipped ComModel against autograd).
TRANSFORM_CODING_FUNCTIONS = {operator.getitem, operator.mul, operator.neg, operator.pow, torch.exp, torch.round,
                              F.pad}
TRANSFORM_CODING_METHODS = {"detach"}


@pytest.mark.parametrize("name", M.list_models())
def test_symbolic_trace_matches_eager(name: str) -> None:
    kwargs = {} if name == "tiny_classifier" else {"pretrained": False}
    model = M.create_model(name, **kwargs).eval()
    traced = fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    transform_coding = name.startswith("comodel_tc")
    functions = ALLOWED_FUNCTIONS | TRANSFORM_CODING_FUNCTIONS if transform_coding else ALLOWED_FUNCTIONS
    for node in traced.graph.nodes:
        if node.op == "call_module":
            assert isinstance(modules[node.target], ALLOWED_MODULES), f"{name}: {node.target} {modules[node.target]}"
        elif node.op == "call_function":
            assert node.target in functions, f"{name}: {node.target}"
        elif node.op == "call_method" and transform_coding:
            assert node.target in TRANSFORM_CODING_METHODS, f"{name}: {node.target}"
        else:
            assert node.op in ("placeholder", "get_attr", "output"), f"{name}: {node.op} {node.target}"
    x = torch.rand(2, 3, *INPUT.get(name, (64, 64)))
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
