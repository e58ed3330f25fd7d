"""The VJP-rule gradient graph against torch.autograd (float64), layer by layer and for every shipped model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import comcloak.models as M
from comcloak.attacks import attack_config, run_attack
from comcloak.attacks.methods import attack_method_names
from comcloak.attacks.through import ComModelThrough, make_through
from comcloak.export import AttackStep, InputGradient, StaticSizeThrough, ThroughThenClassify, UnsupportedLayerError
from comcloak.export.gradient import goal_weights, traceable_through
from comcloak.models.comodel_io import list_shipped_comodels, load_comodel, shipped_comodel_path

TOLERANCE = 1e-10  # float64: the rules compute the same sums as autograd, in another order


def assert_gradient_matches(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> None:
    model = copy.deepcopy(model).double().eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator, dtype=torch.float64)
    gradient = InputGradient(model)
    with torch.enable_grad():
        x_ref = x.clone().requires_grad_(True)
        output = model(x_ref)
        upstream = torch.randn(output.shape, generator=generator, dtype=torch.float64)
        (reference,) = torch.autograd.grad(output, x_ref, upstream)
    with torch.no_grad():
        value, grad_x = gradient(x, upstream)
    torch.testing.assert_close(value, output.detach(), rtol=0, atol=0)
    error = (grad_x - reference).abs().max() / reference.abs().max()
    assert error < TOLERANCE, f"{type(model).__name__}: relative error {error:.2e}"


@pytest.mark.parametrize("name", ["tiny_classifier", "efficientnet_lite0", "mobilenet_v2", "resnet50"])
def test_classifiers(name: str) -> None:
    kwargs = {} if name == "tiny_classifier" else {"pretrained": False}
    assert_gradient_matches(M.create_model(name, **kwargs), (2, 3, 64, 64))


@pytest.mark.parametrize("name", ["comodel_tiny", "comodel_tc_tiny"])
def test_comodel_architectures(name: str) -> None:
    assert_gradient_matches(M.create_model(name), (2, 3, 32, 48))


def test_comodel_tc_with_unet_refiner() -> None:
    model = M.create_model("comodel_tc", block=4, refine_width=4, refine_levels=2)
    assert_gradient_matches(model, (1, 3, 32, 32))


@pytest.mark.parametrize("codec", sorted(list_shipped_comodels()))
def test_every_shipped_comodel(codec: str) -> None:
    assert_gradient_matches(load_comodel(shipped_comodel_path(codec)), (1, 3, 32, 48))


class _Layers(nn.Module):
    """Every rule the real models do not exercise: odd sizes, grouped/strided convs, pooling, slicing, arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)  # odd input: output_padding in the transpose
        self.grouped = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3)
        self.deconv = nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1, groups=2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.avg = nn.AvgPool2d(2)
        self.pad = nn.ZeroPad2d((1, 2, 0, 1))
        self.hard = nn.Hardtanh(-0.5, 0.5)
        self.register_buffer("scale", torch.tensor([0.5, 2.0, -1.0]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        y = self.grouped(y) * y - y / self.scale.repeat(1, 2, 1, 1)
        y = self.deconv(self.pool(y))
        y = torch.cat([y[:, :2] ** 3, torch.exp(-y[:, 2:]), self.hard(y[:, 1:3])], 1)
        y = self.avg(self.pad(y)) / (y.mean() + 2.0)
        return torch.flatten(F.pad(y, (1, 1, 2, 0), mode="replicate").clamp(-1.0, 1.0), 1)


def test_layer_rules_on_odd_sizes() -> None:
    assert_gradient_matches(_Layers(), (2, 3, 17, 23))


def test_max_pool_ties_go_to_the_first_maximum() -> None:
    # A constant input ties every window: autograd sends each window's gradient to its first element.
    pool = nn.Sequential(nn.MaxPool2d(3, 2, 1))
    x = torch.ones(1, 2, 7, 9, dtype=torch.float64)
    upstream = torch.rand(1, 2, 4, 5, dtype=torch.float64)
    with torch.enable_grad():
        x_ref = x.clone().requires_grad_(True)
        (reference,) = torch.autograd.grad(pool(x_ref), x_ref, upstream)
    _, grad_x = InputGradient(pool)(x, upstream)
    torch.testing.assert_close(grad_x, reference, rtol=0, atol=1e-15)


@pytest.mark.parametrize("layer, name", [(nn.GELU(), "GELU"), (nn.Upsample(scale_factor=2), "Upsample"),
                                         (nn.BatchNorm2d(3).train(), "BatchNorm2d")])
def test_unknown_or_unsupported_layers_fail_at_build_time_naming_the_layer(layer: nn.Module, name: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 1), layer)
    with pytest.raises(UnsupportedLayerError, match=name):
        gradient = InputGradient(model)
        gradient(torch.rand(1, 3, 8, 8), torch.ones(1, 3, 16 if name == "Upsample" else 8, 16 if name == "Upsample"
                                                    else 8))


def test_untraceable_model_is_a_clear_error() -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(UnsupportedLayerError, match="cannot be traced"):
        InputGradient(Branchy())


def test_static_size_through_matches_the_dynamic_one() -> None:
    comodel = M.create_model("comodel_tc_tiny")
    x = torch.rand(2, 3, 30, 37)
    dynamic = ComModelThrough(comodel)
    static = traceable_through(dynamic, 30, 37)
    assert isinstance(static, StaticSizeThrough)
    torch.testing.assert_close(static(x), dynamic(x), rtol=0, atol=0)
    with pytest.raises(UnsupportedLayerError, match="cannot be exported"):
        traceable_through(make_through("diffjpeg:50"), 32, 32)


def _step_loop(step: AttackStep, x0: torch.Tensor, w: torch.Tensor, config) -> torch.Tensor:
    x, m = x0.clone(), torch.zeros_like(x0)
    scalars = [torch.tensor([value], dtype=x0.dtype) for value in (config.eps, config.alpha, config.momentum)]
    for _ in range(config.steps):
        x, m, _, _ = step(x, x0, m, w, *scalars, torch.ones_like(x0[:, :1]))
    return x


@pytest.mark.parametrize("method", attack_method_names())
@pytest.mark.parametrize("targeted", [False, True])
def test_attack_step_loop_equals_run_attack(method: str, targeted: bool) -> None:
    """The step graph's loop is the reference attack (float64, where rounding cannot flip a sign)."""
    classifier = M.create_model("tiny_classifier").double()
    through = ComModelThrough(M.create_model("comodel_tc_tiny")).double()
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 3, 32, 32, generator=generator, dtype=torch.float64)
    goal = torch.randint(1000, (3,), generator=generator)
    config = attack_config(method, 8 / 255, targeted=targeted)
    reference = run_attack(classifier, x0, goal, config, through)
    step = AttackStep(ThroughThenClassify(classifier, traceable_through(through, 32, 32)))
    with torch.no_grad():
        ours = _step_loop(step, x0, goal_weights(goal, 1000, targeted, torch.float64), config)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    assert (ours - x0).abs().max() <= config.eps + 1e-12


def test_attack_step_outputs() -> None:
    classifier = M.create_model("tiny_classifier")
    step = AttackStep(ThroughThenClassify(classifier))
    x0 = torch.rand(2, 3, 32, 32)
    goal = torch.tensor([3, 7])
    w = goal_weights(goal, 1000, targeted=True)
    scalars = [torch.tensor([v]) for v in (4 / 255, 1 / 255, 1.0)]
    with torch.no_grad():
        x_next, m_next, logits, loss = step(x0, x0, torch.zeros_like(x0), w, *scalars, torch.ones_like(x0[:, :1]))
        assert logits.shape == (2, 1, 1000)  # (N, surrogates, classes)
        torch.testing.assert_close(logits[:, 0], classifier(x0))
        torch.testing.assert_close(loss, F.cross_entropy(logits[:, 0], goal, reduction="none"))
    torch.testing.assert_close(m_next.abs().mean(dim=(1, 2, 3)), torch.ones(2))  # L1-normalised
    assert ((x_next - x0).abs() <= 1 / 255 + 1e-7).all() and x_next.min() >= 0 and x_next.max() <= 1
