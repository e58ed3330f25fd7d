"""The growing budget (issue 26, ``eps_start``/``eps_ramp``): the schedule, its checks, the torch loop holding each
update to that step's bound (with stopping and under a per-pixel budget), and off by default (tiny classifier)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from comcloak.attacks import AttackConfigError, attack_config
from comcloak.attacks.budget import budget_at, budget_used, ramp_steps
from comcloak.attacks.config import EotSettings
from comcloak.attacks.loop import run_attack_result
from comcloak.attacks.presets import preset_config

EOT = EotSettings(draws=2, view_size=32)




def test_the_schedule_grows_linearly_to_eps_and_stays_there() -> None:
    config = attack_config("mim", 8 / 255, steps=5, eps_start=2 / 255)
    assert ramp_steps(config) == 4
    assert [round(budget_at(config, t) * 8, 6) for t in range(7)] == [2.0, 3.5, 5.0, 6.5, 8.0, 8.0, 8.0]
    short = dataclasses.replace(config, eps_ramp=2)
    assert [budget_at(short, t) for t in range(4)] == [0.25, 0.625, 1.0, 1.0]
    assert budget_used(short, torch.tensor([1, 2, 3, 5])).tolist() == [0.25, 0.625, 1.0, 1.0]
    off = attack_config("mim", 8 / 255, steps=5)
    assert not off.ramped and budget_at(off, 0) == 1.0 and budget_used(off, torch.tensor([1])).tolist() == [1.0]
    assert not attack_config("mim", 8 / 255, eps_start=8 / 255).ramped  # eps_start = eps: the constant budget
    assert budget_at(attack_config("fgsm", 8 / 255, eps_start=2 / 255), 0) == 0.25  # one step: held to eps_start


def test_the_settings_are_checked_in_one_line() -> None:
    with pytest.raises(AttackConfigError, match=r"eps_start \(6\) must be at most eps \(4\)"):
        preset_config("balanced", eps=4, eps_start=6)
    with pytest.raises(AttackConfigError, match="eps_ramp needs eps_start"):
        preset_config("balanced", eps_ramp=3)
    with pytest.raises(AttackConfigError, match="eps_start"):
        preset_config("balanced", eps_start=0)
    with pytest.raises(AttackConfigError, match="eps_ramp"):
        preset_config("balanced", eps_start=1, eps_ramp=-1)
    config = preset_config("balanced", eps_start=2, eps_ramp=4)
    assert config.eps_start == 2 / 255 and config.eps_ramp == 4 and config.ramped  # 0-255 like eps
    off = attack_config("mim", 8 / 255)
    assert off.eps_start is None and off.eps_ramp == 0  # off by default
    assert preset_config("balanced").eps_start is None


def test_off_and_a_start_at_eps_give_todays_cloaks(classifier, stop_images) -> None:
    labels = torch.zeros(4, dtype=torch.long)
    config = attack_config("mim", 8 / 255, steps=3, eot=EOT)
    plain = run_attack_result(classifier, stop_images, labels, config).images
    same = run_attack_result(classifier, stop_images, labels,
                             dataclasses.replace(config, eps_start=config.eps)).images
    assert torch.equal(plain, same)


@pytest.mark.parametrize("stop_after", [0, 1])
@pytest.mark.parametrize("texture", [False, True])
def test_each_update_is_held_to_its_steps_bound(classifier, stop_images, stop_goals, stop_after: int,
                                                texture: bool) -> None:
    """After k updates the change is within eps_{k-1} (times each pixel's factor), and the ramp changes the cloak."""
    from comcloak.attacks.budget import texture_budget

    labels = stop_goals
    budget = "texture" if texture else "uniform"
    base = attack_config("mim", 8 / 255, steps=4, alpha=4 / 255, eot=EOT, budget=budget, stop_after=stop_after,
                         stop_margin=0.0)
    config = dataclasses.replace(base, eps_start=2 / 255)
    factors = texture_budget(stop_images, config) if texture else torch.ones(4, 1, 40, 40)
    for steps in range(1, 5):
        ramped = dataclasses.replace(config, steps=steps, eps_ramp=3)
        result = run_attack_result(classifier, stop_images, labels, ramped)
        bound = config.eps * budget_used(ramped, result.steps_used).float()[:, None, None, None] * factors
        assert ((result.images - stop_images).abs() <= bound + 1e-6).all()
    full = run_attack_result(classifier, stop_images, labels, base).images
    assert not torch.equal(run_attack_result(classifier, stop_images, labels, config).images[1::2], full[1::2])


def test_compaction_keeps_each_photos_cloak(classifier, stop_images, stop_goals) -> None:
    """A stopping photo leaves the batch; the others' bounds (x0 and factors sliced with them) stay their own."""
    labels = stop_goals
    config = attack_config("mim", 8 / 255, steps=4, eot=EOT, eps_start=2 / 255, stop_after=1, stop_margin=0.0,
                           budget="texture")
    together = run_attack_result(classifier, stop_images, labels, config)
    for index in range(4):
        alone = run_attack_result(classifier, stop_images[index:index + 1], labels[index:index + 1], config)
        assert alone.steps_used.tolist() == together.steps_used[index:index + 1].tolist()
        assert torch.allclose(alone.images, together.images[index:index + 1], atol=1e-6)
