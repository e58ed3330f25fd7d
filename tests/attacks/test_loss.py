"""The losses the loop descends (comcloak.attacks.loss): the hand-written gradients the exported graph uses equal
autograd's, and the margin loss means what it says (negative exactly when the clean class is out of the top-5)."""

from __future__ import annotations

import pytest
import torch

from comcloak.attacks.loss import MARGIN_KAPPA, MARGIN_TOP, goal_weights, loss_gradient, per_image_loss
from comcloak.attacks.loss_registry import loss_names


@pytest.mark.parametrize("kind", loss_names())
@pytest.mark.parametrize("targeted", [False, True])
def test_the_hand_written_gradient_is_autograds(kind: str, targeted: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(8, 2, 50, generator=generator, dtype=torch.float64)).requires_grad_(True)
    w = goal_weights(torch.randint(50, (8, 2), generator=generator), 50, targeted, torch.float64)
    (expected,) = torch.autograd.grad(per_image_loss(logits, w, kind).sum(), logits)
    torch.testing.assert_close(loss_gradient(logits.detach(), w, kind), expected, rtol=0, atol=1e-12)


def test_the_margin_is_negative_exactly_when_the_clean_class_leaves_the_top_5() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(200, 30, generator=generator)
    clean = torch.randint(30, (200,), generator=generator)
    loss = per_image_loss(logits, goal_weights(clean, 30, targeted=False), "margin")
    rank = (logits > logits.gather(1, clean[:, None])).sum(1)  # how many classes beat the clean one
    assert torch.equal(loss < 0, rank >= MARGIN_TOP)
    assert loss.min() >= -MARGIN_KAPPA


def test_the_targeted_margin_is_negative_exactly_when_the_target_is_top_1() -> None:
    logits = torch.randn(100, 20, generator=torch.Generator().manual_seed(2))
    target = torch.randint(20, (100,), generator=torch.Generator().manual_seed(3))
    loss = per_image_loss(logits, goal_weights(target, 20, targeted=True), "margin")
    assert torch.equal(loss < 0, logits.argmax(1) == target)


def test_an_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        per_image_loss(torch.zeros(1, 3), torch.zeros(1, 3), "hinge")
