"""The torch backends: precision (autocast), channels_last, and the CUDA-graphed loop (its checks here, its parity
with the eager reference on a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import comcloak.models as M
from comcloak.attacks import attack_config, make_through, run_attack
from comcloak.attacks.through import ComModelThrough
from comcloak.engine.backends import BackendUnavailableError, CudaGraphTorchRunner, TorchRunner
from comcloak.engine.backends.torch_runner import AutocastClassifier

# Parity criterion of the export issue, kept for the CUDA graph: cloaks equal within 1/255 on >= 99.9 % of pixels.
PARITY_FRACTION = 0.999


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    classifier = M.freeze(M.create_model("tiny_classifier"))
    through = M.freeze(ComModelThrough(M.create_model("comodel_tc_tiny")))
    return classifier, through


def smooth_images(count: int, seed: int, size: int = 32) -> torch.Tensor:
    """Photo-like inputs (smooth, on the 0-255 grid) rather than white noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, size // 8, size // 8, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (images * 255).round() / 255


def within_one_level(a: torch.Tensor, b: torch.Tensor) -> float:
    difference = ((a.cpu() * 255).round() - (b.cpu() * 255).round()).abs()
    return float((difference <= 1).float().mean())


def test_autocast_classifier_returns_float32_logits_close_to_fp32(models) -> None:
    classifier, _ = models
    x = smooth_images(4, 0)
    reference = classifier(x)
    logits = AutocastClassifier(classifier, torch.bfloat16)(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, reference, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_torch_runner_precisions_stay_in_the_eps_ball(models, precision) -> None:
    classifier, through = models
    config = attack_config("mim", 8 / 255, steps=3)
    x0 = smooth_images(3, 1)
    goal = classifier(x0).argmax(1)
    with TorchRunner(classifier, through, config, precision=precision) as runner:
        adversarial = runner.infer(x0, goal)
    assert (adversarial - x0).abs().max() <= config.eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    # Every step moves every pixel by alpha (2.7 levels here), so a flipped gradient sign shows; bf16 flips about
    # 10 % of them on this random tiny network (random signs would agree on well under half).
    reference = run_attack(classifier, x0, goal, config, through)
    assert within_one_level(adversarial, reference) > 0.75


def test_torch_runner_channels_last_matches_contiguous(models) -> None:
    classifier, through = models
    config = attack_config("bim", 5 / 255, steps=4, targeted=True)
    x0 = smooth_images(2, 2)
    goal = torch.tensor([3, 7])
    reference = run_attack(classifier, x0, goal, config, through)
    fresh = M.freeze(M.create_model("tiny_classifier"))
    fresh.load_state_dict(classifier.state_dict())
    with TorchRunner(fresh, through, config, channels_last=True) as runner:
        adversarial = runner.infer(x0, goal)
    assert adversarial.is_contiguous()
    assert within_one_level(adversarial, reference) >= PARITY_FRACTION


def test_unknown_precision_is_refused(models) -> None:
    with pytest.raises(ValueError, match="unknown precision 'int8'; available: fp32, bf16, fp16"):
        TorchRunner(*models, attack_config("fgsm", 4 / 255), precision="int8")


def test_cudagraph_runner_checks_what_it_cannot_capture(models) -> None:
    classifier, through = models
    config = attack_config("mim", 4 / 255)
    mix = make_through("mix:none|diffjpeg:50")
    with pytest.raises(BackendUnavailableError, match="cannot capture a random stand-in"):
        CudaGraphTorchRunner(classifier, mix, config, torch.device("cuda")).activate()
    trainable = M.create_model("tiny_classifier")
    with pytest.raises(BackendUnavailableError, match="needs frozen weights"):
        CudaGraphTorchRunner(trainable, through, config, torch.device("cuda")).activate()
    with pytest.raises(BackendUnavailableError, match="needs a CUDA device, got cpu"):
        CudaGraphTorchRunner(classifier, through, config, torch.device("cpu")).activate()
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        CudaGraphTorchRunner(classifier, through, config, torch.device("cuda"), max_batch=0)
    with pytest.raises(ValueError, match="max_graphs must be at least 1"):
        CudaGraphTorchRunner(classifier, through, config, torch.device("cuda"), max_graphs=0)


@pytest.mark.gpu
@pytest.mark.parametrize("method,targeted", [("fgsm", False), ("bim", True), ("mim", False), ("mim", True)])
def test_cudagraph_fp32_matches_eager_reference(models, method, targeted) -> None:
    """Buckets, padding, splitting at max_batch and replays: every image as the eager loop cloaks it."""
    classifier, through = models
    device = torch.device("cuda")
    classifier_gpu = M.freeze(M.create_model("tiny_classifier")).to(device)
    classifier_gpu.load_state_dict(classifier.state_dict())
    through_gpu = M.freeze(ComModelThrough(M.create_model("comodel_tc_tiny"))).to(device)
    config = attack_config(method, 6 / 255, targeted=targeted)
    runner = CudaGraphTorchRunner(classifier_gpu, through_gpu, config, device, max_batch=4)
    with runner:
        for count, seed in ((3, 0), (5, 1), (3, 2), (1, 3)):  # bucket 4 twice (replay), split 4 + 1, bucket 1
            x0 = smooth_images(count, seed).to(device)
            goal = torch.randint(0, 10, (count,), device=device) if targeted else classifier_gpu(x0).argmax(1)
            reference = run_attack(classifier_gpu, x0, goal, config, through_gpu)
            adversarial = runner.infer(x0, goal)
            assert adversarial.shape == x0.shape and adversarial.device == x0.device
            assert within_one_level(adversarial, reference) >= PARITY_FRACTION
        assert sorted(runner._captured) == [(1, 32, 32), (4, 32, 32)]
    assert not runner._captured
    # At most max_graphs captures are kept: the least recently used is released.
    with CudaGraphTorchRunner(classifier_gpu, through_gpu, config, device, max_graphs=2) as small:
        for size in (32, 48, 32, 64):
            small.infer(smooth_images(2, 5, size).to(device), torch.zeros(2, dtype=torch.long, device=device))
        assert list(small._captured) == [(2, 32, 32), (2, 64, 64)]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cudagraph_mixed_precision_runs_and_stays_in_the_ball(models, precision) -> None:
    classifier, through = models
    device = torch.device("cuda")
    classifier_gpu = M.freeze(M.create_model("tiny_classifier")).to(device)
    classifier_gpu.load_state_dict(classifier.state_dict())
    config = attack_config("mim", 6 / 255)
    x0 = smooth_images(6, 4, size=48).to(device)
    goal = classifier_gpu(x0).argmax(1)
    with CudaGraphTorchRunner(classifier_gpu, through.to(device), config, device, precision=precision) as runner:
        adversarial = runner.infer(x0, goal)
    assert torch.isfinite(adversarial).all()
    assert (adversarial - x0).abs().max() <= config.eps + 1e-6
    reference = run_attack(classifier_gpu, x0, goal, config, through.to(device))
    assert within_one_level(adversarial, reference) > 0.9
    np.testing.assert_array_equal(adversarial.shape, x0.shape)
