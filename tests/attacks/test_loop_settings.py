"""run_attack's LoopSettings change how the loop runs, never the cloak: a power-of-two loss scale and dense draws
give the reference's pixels exactly."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from comcloak.attacks import attack_config, run_attack
from comcloak.attacks.config import EotSettings
from comcloak.attacks.loop import LoopSettings
from comcloak.attacks.through import ComModelThrough
from comcloak.models import create_model, freeze


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    classifier = freeze(create_model("tiny_classifier"))
    through = freeze(ComModelThrough(create_model("comodel_tc_tiny")))
    generator = torch.Generator().manual_seed(1)
    images = F.interpolate(torch.rand(2, 3, 8, 8, generator=generator), size=(48, 48), mode="bilinear")
    return classifier, through, images


def test_loop_settings_default_is_the_reference() -> None:
    assert LoopSettings() == LoopSettings(fused_update=False, loss_scale=1.0, dense_draws=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        LoopSettings().loss_scale = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("settings", [LoopSettings(loss_scale=1024.0), LoopSettings(dense_draws=True),
                                      LoopSettings(fused_update=True)])
def test_loop_settings_do_not_change_the_cloak(setup, settings: LoopSettings) -> None:
    classifier, through, images = setup
    config = dataclasses.replace(attack_config("mim", 8 / 255, 3),
                                 eot=EotSettings(draws=2, view_size=32, through_rate=0.5))
    labels = classifier(images).argmax(1)
    reference = run_attack(classifier, images, labels, config, through)
    torch.testing.assert_close(run_attack(classifier, images, labels, config, through, settings=settings),
                               reference, rtol=0, atol=0)
