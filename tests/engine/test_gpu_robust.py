"""The robust attack on a GPU: the CUDA-graph backend with its on-device draw sampler (EOT draws, a surrogate
ensemble, fp32 and bf16) against the eager loop, and the Cloaker end to end on CUDA (the compose kernel's path).

Every test here is ``gpu``: it skips on a machine without a CUDA device (CI), and runs in ``bench/gpu.sh``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import comcloak.models as M
from comcloak.attacks import attack_config, run_attack
from comcloak.attacks.config import EotSettings
from comcloak.attacks.eot import DrawSampler, apply_draw
from comcloak.attacks.loop import stand_ins_of
from comcloak.attacks.through import ComModelThrough
from comcloak.engine.backends import CudaGraphTorchRunner

ROBUST = EotSettings(draws=2, view_size=32)
HELD_OUT_DRAWS = 32  # fresh draws per image that no attack saw: the small-scale stand-in for the attacker's view


def smooth_images(count: int, seed: int, height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, height // 8, width // 8, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (images * 255).round() / 255


@pytest.fixture(scope="module")
def gpu_models():
    torch.manual_seed(0)
    device = torch.device("cuda")
    ensemble = nn.ModuleList([M.freeze(M.create_model(name)) for name in ("tiny_classifier", "tiny_classifier_b")])
    through = M.freeze(ComModelThrough(M.create_model("comodel_tc_tiny")))
    return ensemble.to(device), through.to(device)


def held_out_flip_rate(ensemble: nn.ModuleList, through: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of (image, fresh draw, surrogate) whose top-1 is no longer the clean label."""
    settings = dataclasses.replace(ROBUST, draws=HELD_OUT_DRAWS)
    draw = DrawSampler(settings, len(stand_ins_of(through)), seed=12345, device=x.device).sample(
        x.shape[0], x.shape[2], x.shape[3])
    with torch.no_grad():
        views = apply_draw(x, draw, stand_ins_of(through))
        flips = [(member(views).argmax(1) != labels[:, index].repeat_interleave(HELD_OUT_DRAWS)).float().mean()
                 for index, member in enumerate(ensemble)]
    return float(torch.stack(flips).mean())


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cudagraph_robust_attack_draws_on_the_device_and_protects_like_eager(gpu_models, precision) -> None:
    """The captured loop samples its draws on the device (each replay draws anew), keeps the budget, and flips as
    many held-out draws as the eager loop with its per-image host draws (within sampling noise). On the CPU, the same
    loop with the on-device sampler measured clean 0.24, eager 0.42, on-device fp32 0.42, bf16 0.40-0.41."""
    ensemble, through = gpu_models
    config = attack_config("mim", 16 / 255, 10, loss="margin", eot=ROBUST)
    x0 = smooth_images(16, 7, 40, 56).cuda()
    with torch.no_grad():
        labels = torch.stack([member(x0).argmax(1) for member in ensemble], dim=1)  # (N, 2): one per surrogate
    eager = run_attack(ensemble, x0, labels, config, through)
    with CudaGraphTorchRunner(ensemble, through, config, torch.device("cuda"), precision, max_batch=16) as runner:
        first = runner.infer(x0, labels)
        second = runner.infer(x0, labels)
    for cloak in (first, second):
        assert torch.isfinite(cloak).all() and cloak.min() >= 0 and cloak.max() <= 1
        assert (cloak - x0).abs().max() <= config.eps + 1e-6
    assert not torch.equal(first, second), "a replay reused the captured draws instead of drawing anew"
    clean, reference = (held_out_flip_rate(ensemble, through, x, labels) for x in (x0, eager))
    captured = np.mean([held_out_flip_rate(ensemble, through, x, labels) for x in (first, second)])
    assert reference > clean + 0.1, f"the eager robust attack did not work here: {clean:.2f} -> {reference:.2f}"
    assert captured >= reference - 0.06, f"CUDA graph {precision}: {captured:.2f} vs eager {reference:.2f}"


@pytest.mark.gpu
def test_cloaker_on_cuda_with_the_cudagraph_backend_cloaks_a_photo(sample_photos) -> None:
    """The product path on a GPU: a real photo, the fast preset on the CUDA-graph backend in bf16, composed at full
    resolution on the device, within the budget and changed."""
    from comcloak.engine.cloaker import Cloaker

    photo = sample_photos["chelsea"]
    cloaker = Cloaker(strength="fast", backend="torch-cudagraph", device="cuda", precision="bf16", steps=4)
    pixels = cloaker.cloak(photo[None])[0]
    assert pixels.shape == photo.shape and pixels.dtype == np.uint8
    difference = np.abs(pixels.astype(int) - photo.astype(int))
    assert 0 < difference.max() <= cloaker.config.eps_255 + 1


@pytest.mark.gpu
def test_cudagraph_bsr_draws_are_captured_and_drawn_anew(gpu_models) -> None:
    """Block-shuffle draws (bsr_rate > 0) are sampled on the device inside the captured loop as the others are (an
    argsort of uniforms: fixed shapes, no host sync): the cloak keeps the budget and each replay draws anew."""
    ensemble, through = gpu_models
    settings = dataclasses.replace(ROBUST, bsr_rate=0.5, bsr_blocks=4)
    config = attack_config("mim", 16 / 255, 4, loss="margin", eot=settings)
    x0 = smooth_images(4, 9, 40, 56).cuda()
    with torch.no_grad():
        labels = torch.stack([member(x0).argmax(1) for member in ensemble], dim=1)
    with CudaGraphTorchRunner(ensemble, through, config, torch.device("cuda"), "fp32", max_batch=4) as runner:
        first, second = runner.infer(x0, labels), runner.infer(x0, labels)
    for cloak in (first, second):
        assert torch.isfinite(cloak).all() and (cloak - x0).abs().max() <= config.eps + 1e-6
    assert not torch.equal(first, second)


@pytest.mark.gpu
@pytest.mark.parametrize("budget", ["texture", "capped"])
def test_cudagraph_captures_the_shaped_budget_map(gpu_models, budget: str) -> None:
    """A shaped budget's map is computed inside the captured graph from its static clean images: each pixel of the
    cloak stays within eps times the map the eager loop computes, on the same device."""
    from comcloak.attacks.budget import texture_budget

    ensemble, through = gpu_models
    config = attack_config("mim", 16 / 255, 4, loss="margin", eot=ROBUST, budget=budget)
    x0 = smooth_images(4, 11, 40, 56).cuda()
    with torch.no_grad():
        labels = torch.stack([member(x0).argmax(1) for member in ensemble], dim=1)
    with CudaGraphTorchRunner(ensemble, through, config, torch.device("cuda"), "fp32", max_batch=4) as runner:
        cloak = runner.infer(x0, labels)
    bound = config.eps * texture_budget(x0, config)
    assert torch.isfinite(cloak).all() and torch.all((cloak - x0).abs() <= bound + 1e-6)
    assert (cloak - x0).abs().max() > 0.5 * config.eps
