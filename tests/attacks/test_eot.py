"""The robust attack's draws (comcloak.attacks.eot): resampling matrices, the sampler, applying a draw, and the loop
with draws (per-image reproducibility, the budget, what it buys over the lab view)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import comcloak.models as M
from comcloak.attacks import attack_config, run_attack
from comcloak.attacks.config import AttackConfigError, EotSettings
from comcloak.attacks.eot import DRAW_INPUTS, DrawSampler, apply_draw, identity_draw, resample_matrix
from comcloak.attacks.loop import descent_gradient
from comcloak.attacks.through import make_through

ROBUST = EotSettings(draws=2, view_size=32)


def test_resample_matrices_are_identity_downscale_and_flip() -> None:
    whole = resample_matrix(6, 6, torch.zeros(1), torch.full((1,), 6.0))[0]
    torch.testing.assert_close(whole, torch.eye(6))
    halved = resample_matrix(4, 2, torch.zeros(1), torch.full((1,), 4.0))[0]
    signal = torch.tensor([1.0, 3.0, 5.0, 7.0])
    assert torch.allclose(halved.sum(1), torch.ones(2))
    # Triangle of radius 2 around input positions 1 and 3: weights 3, 3, 1 (and 1, 3, 3), normalised.
    assert (halved @ signal).tolist() == pytest.approx([17 / 7, 39 / 7], abs=1e-5)
    flipped = resample_matrix(6, 6, torch.zeros(1), torch.full((1,), 6.0), torch.tensor([True]))[0]
    torch.testing.assert_close(flipped, torch.eye(6).flip(0))


def test_resample_matches_torch_antialiased_bilinear_on_a_downscale() -> None:
    image = torch.rand(1, 1, 64, 48, generator=torch.Generator().manual_seed(0))
    rows = resample_matrix(64, 20, torch.zeros(1), torch.full((1,), 64.0))[0]
    columns = resample_matrix(48, 15, torch.zeros(1), torch.full((1,), 48.0))[0]
    ours = rows @ image[0, 0] @ columns.T
    reference = F.interpolate(image, size=(20, 15), mode="bilinear", antialias=True, align_corners=False)[0, 0]
    assert (ours - reference).abs().max() < 0.02  # the same filter; borders are normalised slightly differently


def test_the_sampler_draws_valid_shapes_and_one_hot_codecs() -> None:
    sampler = DrawSampler(dataclasses.replace(ROBUST, through_rate=0.5), stand_ins=2, seed=3)
    draw = sampler.sample(3, 40, 56)
    shapes = {name: tuple(value.shape) for name, value in draw.tensors().items()}
    assert shapes == {"pre_h": (3, 2, 40, 40), "pre_w": (3, 2, 56, 56), "mix": (3, 2, 3), "post_h": (3, 2, 32, 40),
                      "post_w": (3, 2, 32, 56)}
    assert list(draw.tensors()) == list(DRAW_INPUTS)
    assert torch.equal(draw.mix.sum(-1), torch.ones(3, 2)) and set(draw.mix.unique().tolist()) == {0.0, 1.0}
    for name in ("pre_h", "pre_w", "post_h", "post_w"):
        value = draw.tensors()[name]
        assert torch.allclose(value.sum(-1), torch.ones(value.shape[:-1]), atol=1e-5) and value.min() >= 0, name
    never = DrawSampler(dataclasses.replace(ROBUST, through_rate=0.0), stand_ins=2).sample(4, 40, 56)
    assert (never.mix[..., 0] == 1).all()


def test_the_platform_downscale_of_an_unshrunk_draw_is_exactly_the_identity() -> None:
    """The host sampler computes only the shrinking draws' low-passes (identities for the rest); the on-device
    sampler (a CUDA graph's, no data-dependent shapes) computes all: the same matrices, bit for bit."""
    factor = torch.tensor([1.0, 0.7, 1.0, 0.55, 0.999])
    host = DrawSampler(ROBUST, stand_ins=1, seed=0)
    capture = DrawSampler.on_device(ROBUST, 1, "cpu")
    dense = capture._downscale(40, factor)
    assert torch.equal(host._downscale(40, factor), dense)
    assert torch.equal(dense[0], torch.eye(40)) and torch.equal(dense[2], torch.eye(40))
    assert not torch.equal(dense[4], torch.eye(40))
    assert torch.equal(host._downscale(40, torch.ones(3)), torch.eye(40).expand(3, 40, 40))


def test_each_images_draws_depend_on_its_content_only() -> None:
    images = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    together = DrawSampler.for_images(ROBUST, 1, images, seed=5).sample(3, 40, 56)
    alone = DrawSampler.for_images(ROBUST, 1, images[1:2], seed=5).sample(1, 40, 56)
    for name in DRAW_INPUTS:
        torch.testing.assert_close(together.tensors()[name][1:2], alone.tensors()[name])
    other_seed = DrawSampler.for_images(ROBUST, 1, images[1:2], seed=6).sample(1, 40, 56)
    assert not torch.equal(other_seed.post_w, alone.post_w)


def test_an_identity_draw_changes_nothing_and_dense_equals_sparse() -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    stand_in = make_through("comodel:jpeg:50")
    torch.testing.assert_close(apply_draw(x, identity_draw(2, 32, 32, 1), [stand_in]), x)
    draw = DrawSampler(dataclasses.replace(ROBUST, through_rate=0.5), 1, seed=4).sample(2, 32, 32)
    torch.testing.assert_close(apply_draw(x, draw, [stand_in]), apply_draw(x, draw, [stand_in], dense=True))
    with pytest.raises(ValueError, match="mixes 1 stand-ins, 0 given"):
        apply_draw(x, draw, [])


def test_eot_settings_are_validated() -> None:
    for bad, message in [({"draws": -1}, "draws must be 0"), ({"through_rate": 1.5}, "through_rate must be in"),
                         ({"rescale_range": (1.3, 1.1)}, "rescale_range"),
                         ({"rescale_range": (0.5, 1.1)}, "at least 1"),
                         ({"downscale_range": (0.5, 1.5)}, "downscale_range"), ({"view_size": 8}, "attacker view")]:
        with pytest.raises(AttackConfigError, match=message):
            attack_config("mim", 5 / 255, eot=EotSettings(**bad))


def test_the_robust_loop_keeps_the_budget_and_batching_changes_nothing() -> None:
    classifier = M.create_model("tiny_classifier")
    through = make_through("comodel:jpeg:50")
    x0 = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(3))
    goal = classifier(x0).argmax(1)
    config = attack_config("mim", 6 / 255, 3, loss="margin", eot=ROBUST)
    together = run_attack(classifier, x0, goal, config, through)
    assert (together - x0).abs().max() <= config.eps + 1e-6 and together.min() >= 0 and together.max() <= 1
    assert (together - x0).abs().max() > config.eps / 2  # it moved
    alone = run_attack(classifier, x0[2:], goal[2:], config, through)
    torch.testing.assert_close(together[2:], alone)


def test_an_ensembles_gradient_averages_its_members_each_with_its_own_label() -> None:
    first, second = M.create_model("tiny_classifier"), M.create_model("tiny_classifier_b")
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    first, second = first.double(), second.double()
    goal = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]])
    config = attack_config("mim", 8 / 255, 2, loss="margin")
    identity = torch.nn.Identity()
    _, both = descent_gradient([first, second], identity, x, goal, config)
    _, alone_first = descent_gradient([first], identity, x, goal[:, :1], config)
    _, alone_second = descent_gradient([second], identity, x, goal[:, 1:], config)
    torch.testing.assert_close(both, (alone_first + alone_second) / 2)
    with pytest.raises(ValueError, match=r"labels must be shaped \(N,\) or \(N, 2\)"):
        run_attack([first, second], x, goal.repeat(1, 2), config)
