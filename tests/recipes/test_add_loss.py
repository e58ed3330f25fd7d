"""Recipe: add a loss with one object (its value and its hand-written logits gradient) and one registration line,
no comcloak file touched (docs/DESIGN.md §7).

The toy loss ``toy-logit`` descends the goal's logit itself: ``-sum(w * z)`` (untargeted: the clean logit goes down;
targeted: the target's goes up); its logits gradient is ``-w``. Once registered, ``AttackConfig`` accepts it,
``run_attack`` descends it and the exported step graph (``AttackStep``) takes its gradient from it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from comcloak.attacks import attack_config, run_attack
from comcloak.attacks.loop import descent_gradient
from comcloak.attacks.loss import Loss, goal_weights, loss_gradient, per_image_loss
from comcloak.attacks.loss_registry import LossInfo, loss_names, register_loss, unregister_loss
from comcloak.models import create_model

TOY_LOGIT = Loss(value=lambda logits, w: -(w * logits).sum(dim=-1), gradient=lambda logits, w: -w)


@pytest.fixture()
def toy_loss() -> Iterator[LossInfo]:
    yield register_loss(LossInfo("toy-logit", TOY_LOGIT, "the goal's logit"))  # the one registration line
    unregister_loss("toy-logit")
    assert "toy-logit" not in loss_names()


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("tiny_classifier").eval()


@pytest.mark.parametrize("targeted", [False, True])
def test_its_hand_written_gradient_is_autograds(toy_loss: LossInfo, targeted: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 2, 30, generator=generator, dtype=torch.float64).requires_grad_(True)
    w = goal_weights(torch.randint(30, (4, 2), generator=generator), 30, targeted, torch.float64)
    (expected,) = torch.autograd.grad(per_image_loss(logits, w, "toy-logit").sum(), logits)
    torch.testing.assert_close(loss_gradient(logits.detach(), w, "toy-logit"), expected, rtol=0, atol=1e-12)


def test_run_attack_descends_it(toy_loss: LossInfo, classifier: torch.nn.Module) -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    clean = classifier(x).argmax(1)
    config = attack_config("bim", 8 / 255, steps=3, loss="toy-logit")
    assert config.loss == "toy-logit"
    adversarial = run_attack(classifier, x, clean, config)
    with torch.no_grad():
        before = classifier(x).gather(1, clean[:, None])
        after = classifier(adversarial).gather(1, clean[:, None])
    assert (after < before).all()  # the clean logit went down
    assert not torch.equal(adversarial, run_attack(classifier, x, clean, attack_config("bim", 8 / 255, steps=3)))


def test_the_exported_step_takes_its_gradient(toy_loss: LossInfo, classifier: torch.nn.Module) -> None:
    from comcloak.export import AttackStep, ThroughThenClassify

    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    clean = classifier(x0).argmax(1)
    config = attack_config("mim", 4 / 255, loss="toy-logit")
    _, gradient = descent_gradient([classifier], torch.nn.Identity(), x0, clean[:, None], config)
    step = AttackStep(ThroughThenClassify(classifier), loss="toy-logit")
    scalars = [torch.tensor([value]) for value in (config.eps, config.alpha, config.momentum)]
    with torch.no_grad():
        _, m_next, _, _ = step(x0, x0, torch.zeros_like(x0), goal_weights(clean, 1000, False), *scalars,
                              torch.ones_like(x0[:, :1]))
    expected = gradient / gradient.abs().mean(dim=(1, 2, 3), keepdim=True)  # m = 0: the L1-normalised gradient
    torch.testing.assert_close(m_next, expected, rtol=1e-4, atol=1e-5)


def test_the_registry_is_clean_again() -> None:
    assert "toy-logit" not in loss_names()
