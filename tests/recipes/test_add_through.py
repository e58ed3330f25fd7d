"""Recipe: add a stand-in ("through") family with one builder and one registration line, no comcloak file touched
(docs/DESIGN.md §7).

The toy stand-in ``blur:K`` is a K x K box blur (differentiable). Once registered, ``--through blur:3`` builds it,
``mix:``/``eot:`` combine it with others, the attack loop takes its gradient through it, and the ``Cloaker`` cloaks
through it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from comcloak.attacks import attack_config, run_attack
from comcloak.attacks.loop import descent_gradient
from comcloak.attacks.through import (
    ExpectationThrough,
    ThroughInfo,
    ThroughSpecError,
    make_through,
    register_through,
    registered_throughs,
    unregister_through,
)
from comcloak.models import create_model


class BoxBlur(nn.Module):
    """A K x K mean filter with replicated edges: images (N, 3, H, W) -> (N, 3, H, W)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.size // 2
        padded = F.pad(x, (pad, self.size - 1 - pad, pad, self.size - 1 - pad), mode="replicate")
        return F.avg_pool2d(padded, self.size, stride=1)


def build_blur(argument: str, seed: int) -> nn.Module:
    if not argument.isdigit() or int(argument) < 1:
        raise ThroughSpecError(f"blur size must be a positive integer, got {argument!r}")
    return BoxBlur(int(argument))


@pytest.fixture()
def blur() -> Iterator[ThroughInfo]:
    yield register_through(ThroughInfo("blur", build_blur, ("blur:K",)))  # the one registration line
    unregister_through("blur")
    assert "blur" not in [info.name for info in registered_throughs()]


def test_specs_build_it_alone_and_combined(blur: ThroughInfo) -> None:
    x = torch.rand(1, 3, 16, 20)
    module = make_through("blur:3")
    assert isinstance(module, BoxBlur) and not any(p.requires_grad for p in module.parameters())
    assert module(x).shape == x.shape
    eot = make_through("eot:none|blur:3")
    assert isinstance(eot, ExpectationThrough) and isinstance(eot.choices[1], BoxBlur)
    with pytest.raises(ThroughSpecError, match="blur size must be"):
        make_through("blur:x")
    with pytest.raises(ThroughSpecError, match="blur:K"):  # the unknown-spec error lists it
        make_through("sharpen:2")


def test_the_attack_loop_takes_its_gradient_through_it(blur: ThroughInfo) -> None:
    torch.manual_seed(0)
    classifier = create_model("tiny_classifier").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = classifier(x).argmax(1)
    config = attack_config("bim", 4 / 255, steps=3, through="blur:3")
    blurred, plain = make_through(config.through), make_through("none")
    _, through_blur = descent_gradient([classifier], blurred, x, labels[:, None], config)
    _, through_none = descent_gradient([classifier], plain, x, labels[:, None], config)
    assert not torch.allclose(through_blur, through_none)  # another gradient path
    # The chain rule through the blur: the plain gradient at the blurred images, pulled back by the blur's VJP.
    seen = blurred(x).detach()
    _, at_seen = descent_gradient([classifier], plain, seen, labels[:, None], config)
    x_var = x.clone().requires_grad_(True)
    (pulled_back,) = torch.autograd.grad(blurred(x_var), x_var, at_seen)
    torch.testing.assert_close(through_blur, pulled_back)
    adversarial = run_attack(classifier, x, labels, config, through=blurred)
    assert (adversarial - x).abs().max() <= config.eps + 1e-6
    assert not torch.equal(adversarial, run_attack(classifier, x, labels, config, through=plain))


def test_the_cloaker_cloaks_through_it(blur: ThroughInfo, sample_photos) -> None:
    from comcloak.engine import Cloaker

    photo = sample_photos["chelsea"][:64, :96]
    cloaked = Cloaker(classifier="tiny_classifier", through="blur:3", eps=4, steps=2, attack_size=48,
                      device="cpu").cloak(photo[None])[0]
    assert cloaked.shape == photo.shape and np.abs(cloaked.astype(int) - photo.astype(int)).max() <= 4
    assert not np.array_equal(cloaked, photo)


def test_the_registry_is_clean_again() -> None:
    assert "blur" not in [info.name for info in registered_throughs()]
