"""The fused attack update: its torch reference is the loop's update; the CUDA kernel matches the reference."""

from __future__ import annotations

import pytest
import torch

from comcloak.attacks import attack_config
from comcloak.attacks.loop import attack_update
from comcloak.kernels import attack_update_reference


def random_state(shape=(3, 3, 17, 29), seed: int = 0, device: str = "cpu"):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=generator)
    eps = 6 / 255
    x = (x0 + (torch.rand(shape, generator=generator) * 2 - 1) * eps).clamp(0, 1)
    momentum = torch.randn(shape, generator=generator)
    gradient = torch.randn(shape, generator=generator) * torch.logspace(-6, 0, shape[0]).view(-1, 1, 1, 1)
    gradient[0, 0, 0, :5] = 0.0  # exact zeros: sign 0 where the momentum is 0 too
    lower, upper = (x0 - eps).clamp_min(0), (x0 + eps).clamp_max(1)
    return [t.to(device) for t in (x, momentum, gradient, lower, upper)]


def test_reference_is_the_attack_loops_update_by_definition() -> None:
    x, momentum, gradient, lower, upper = random_state()
    for method, targeted in (("mim", True), ("bim", False)):
        config = attack_config(method, 6 / 255, targeted=targeted)
        expected = attack_update(x, momentum, gradient, config, lower, upper)
        step = (-1 if targeted else 1) * config.alpha
        got = attack_update_reference(x, momentum, gradient, lower, upper, step, config.momentum)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_reference_semantics() -> None:
    x, momentum, gradient, lower, upper = random_state()
    x_next, m_next = attack_update_reference(x, momentum, gradient, lower, upper, 0.01, 0.5)
    scale = gradient.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    torch.testing.assert_close(m_next, 0.5 * momentum + gradient / scale)
    assert (x_next >= lower).all() and (x_next <= upper).all()
    moved = (x_next - x).abs()
    free = (x + 0.01 * m_next.sign() - x_next).abs() < 1e-7
    assert free.float().mean() > 0.3 and (moved <= 0.01 + 1e-7).all()
    # An all-zero gradient: no NaN, momentum only decays.
    zero = torch.zeros_like(gradient)
    _, decayed = attack_update_reference(x, momentum, zero, lower, upper, 0.01, 0.5)
    torch.testing.assert_close(decayed, 0.5 * momentum)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(3, 3, 17, 29), (1, 3, 224, 224), (5, 3, 8, 8)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_kernel_matches_reference(loaded_kernels, shape, channels_last) -> None:
    """Tolerances: m within float32 rounding (rtol 1e-5, the per-image sum is ordered differently); x equal except
    where m is within rounding of 0 (at most 1e-4 of the elements)."""
    tensors = random_state(shape, seed=1, device="cuda")
    if channels_last:
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    for step, mu in ((0.004, 1.0), (-0.002, 0.0)):
        x_ref, m_ref = attack_update_reference(*tensors, step, mu)
        x_next, m_next = loaded_kernels.attack_update(*tensors, step, mu)
        torch.testing.assert_close(m_next, m_ref, rtol=1e-5, atol=1e-6)
        differs = (x_next != x_ref).float().mean().item()
        assert differs <= 1e-4
        assert x_next.shape == x_ref.shape and x_next.stride() == x_ref.stride()


@pytest.mark.gpu
def test_kernel_is_captured_by_a_cuda_graph(loaded_kernels) -> None:
    tensors = random_state((4, 3, 32, 32), seed=2, device="cuda")
    expected = loaded_kernels.attack_update(*tensors, 0.003, 1.0)
    graph = torch.cuda.CUDAGraph()
    loaded_kernels.attack_update(*tensors, 0.003, 1.0)  # warm-up outside the capture
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        captured = loaded_kernels.attack_update(*tensors, 0.003, 1.0)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, expected, rtol=0, atol=0)
