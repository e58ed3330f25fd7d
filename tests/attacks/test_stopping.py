"""Per-photo stopping (issue 26): the margins, the rule (k safe steps in a row, the checked iterate kept), off by
default, compaction that keeps each photo's cloak independent of its batch mates, the settings' checks and CLI."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from comcloak.attacks import AttackConfigError, attack_config, run_attack
from comcloak.attacks.config import EotSettings
from comcloak.attacks.loop import run_attack_result
from comcloak.attacks.stopping import StopTracker, goal_margins, image_margins

EOT = EotSettings(draws=2, view_size=32)




def test_margins_untargeted_and_targeted() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    assert goal_margins(logits, torch.tensor([1, 0]), targeted=False).tolist() == [-1.0, 5.0]
    assert goal_margins(logits, torch.tensor([1, 2]), targeted=True).tolist() == [1.0, 5.0]
    per_view = torch.tensor([[[[1.0, 3.0, 2.0], [4.0, 0.0, 1.0]]]])  # (N=1, M=1, V=2, K=3)
    assert image_margins(per_view, torch.tensor([[1]]), targeted=False).tolist() == [-1.0]


def test_the_tracker_needs_consecutive_safe_steps() -> None:
    tracker = StopTracker(batch=2, after=2, margin=1.0)
    assert tracker.check(torch.tensor([3.0, 3.0]), 0).tolist() == [False, False]
    assert tracker.check(torch.tensor([0.5, 3.0]), 1).tolist() == [False, True]  # photo 0's run broken
    assert tracker.check(torch.tensor([2.0]), 2).tolist() == [False]
    assert tracker.check(torch.tensor([2.0]), 3).tolist() == [True]
    assert tracker.finish(10).tolist() == [4, 2] and tracker.active.numel() == 0


def test_off_by_default_and_unchanged(classifier, stop_images, stop_goals) -> None:
    config = attack_config("mim", 8 / 255, steps=3, eot=EOT)
    assert config.stop_after == 0
    result = run_attack_result(classifier, stop_images, stop_goals, config)
    assert torch.equal(result.images, run_attack(classifier, stop_images, stop_goals, config))
    assert result.steps_used.tolist() == [3] * 4


@pytest.mark.parametrize("eot", [EotSettings(), EOT], ids=["paper", "draws"])
def test_a_safe_photo_stops_after_k_steps_with_the_checked_iterate(classifier, stop_images, stop_goals, eot) -> None:
    goal = stop_goals
    config = attack_config("mim", 8 / 255, steps=5, eot=eot, stop_after=2, stop_margin=0.0)
    result = run_attack_result(classifier, stop_images, goal, config)
    assert result.steps_used[0] == 2 and result.steps_used[2] == 2
    one_step = run_attack(classifier, stop_images[:1], goal[:1], dataclasses.replace(config, steps=1, stop_after=0))
    assert torch.equal(result.images[:1], one_step)  # x_1: the iterate checked at step 2, not x_2
    assert (result.images - stop_images).abs().max() <= 8 / 255 + 1e-6


def test_compaction_gives_each_photo_the_cloak_it_gets_alone(classifier, stop_images, stop_goals) -> None:
    goal = stop_goals
    # The uniform budget: the texture map itself differs across batch sizes in the last float32 bit (bisection)
    config = attack_config("mim", 8 / 255, steps=6, eot=EOT, stop_after=2, stop_margin=0.0)
    together = run_attack_result(classifier, stop_images, goal, config)
    assert together.steps_used.min() < 6  # some photos stopped, so the batch was compacted
    for index in range(len(stop_images)):
        alone = run_attack_result(classifier, stop_images[index : index + 1], goal[index : index + 1], config)
        assert torch.equal(alone.images, together.images[index : index + 1]), index
        assert alone.steps_used.tolist() == together.steps_used[index : index + 1].tolist()


@pytest.mark.parametrize(("changes", "message"), [({"stop_after": -1}, "stop_after must be"),
                                                  ({"stop_margin": -0.5}, "stop_margin must be"),
                                                  ({"stop_after": 1.5}, "stop_after")])
def test_bad_settings_are_refused_in_one_line(changes, message) -> None:
    with pytest.raises(AttackConfigError, match=message) as error:
        attack_config("mim", 8 / 255, **changes)
    assert "\n" not in str(error.value)


def test_the_cli_options_reach_the_configuration() -> None:
    from comcloak.cli.evaluate import strength_configs
    from comcloak.cli.main import build_parser
    from comcloak.cli.options import attack_config_from_args

    args = build_parser().parse_args(["cloak", "in.png", "-o", "out", "--stop-after", "3", "--stop-margin", "2"])
    config = attack_config_from_args(args)
    assert (config.stop_after, config.stop_margin) == (3, 2.0)
    args = build_parser().parse_args(["eval", "photos", "--protocol", "platform", "--strengths", "balanced",
                                      "--stop-after", "2"])
    assert [c.stop_after for c in strength_configs(args, args.eps)] == [2]


def test_a_face_cloak_refuses_stopping() -> None:
    from comcloak.attacks.faces.settings import FaceCloakConfig

    whole = EotSettings(draws=2, rescale_range=(1.0, 1.0), whole_image_rate=1.0, flip_rate=0.0)
    FaceCloakConfig(attack_config("mim", 5 / 255, eot=whole))
    with pytest.raises(AttackConfigError, match="does not stop photos early"):
        FaceCloakConfig(attack_config("mim", 5 / 255, eot=whole, stop_after=2))


def test_a_faces_only_cloaker_refuses_stopping() -> None:
    from comcloak.engine.cloaker import Cloaker
    from comcloak.engine.cloaker_settings import CloakerConfigError

    with pytest.raises(CloakerConfigError, match="stop_after applies to the objects cloak, and protect='faces'"):
        Cloaker(protect="faces", stop_after=2, device="cpu")


@pytest.fixture
def stopping_preset(monkeypatch) -> str:
    """A preset that stops photos by itself (no shipped preset does now; the first ``clean`` did): ``balanced``
    stopping each photo after 3 safe steps at a margin of 5, registered for the test only."""
    from dataclasses import replace

    from comcloak.attacks.presets import PRESETS

    monkeypatch.setitem(PRESETS, "stopper", replace(PRESETS["balanced"], name="stopper", stop_after=3,
                                                    stop_margin=5.0))
    return "stopper"


def test_a_presets_own_stopping_is_moot_where_it_cannot_apply(stopping_preset: str) -> None:
    """A preset that stops photos early by itself: a faces-only Cloaker and a user-named backend that cannot stop
    take it without refusing (the user did not ask for stopping); a stop the user asks for is still refused."""
    import torch

    from comcloak.attacks.presets import preset_config
    from comcloak.engine.backends.factory import resolve_backend_for
    from comcloak.engine.cloaker import Cloaker
    from comcloak.engine.cloaker_settings import CloakerConfigError

    Cloaker(protect="faces", strength=stopping_preset, device="cpu")
    Cloaker(protect="faces", config=preset_config(stopping_preset), device="cpu")
    with pytest.raises(CloakerConfigError, match="stop_after applies"):
        Cloaker(protect="faces", config=preset_config(stopping_preset, stop_after=2), device="cpu")
    cpu = torch.device("cpu")
    own = preset_config(stopping_preset)
    assert resolve_backend_for(own, "torch", cpu) == ("torch", own)
    assert resolve_backend_for(own, "auto", cpu)[1].stop_after == 3  # auto picks one that stops
    # torch-cudagraph on a CPU: the device is the reason, stopping or not.
    with pytest.raises(Exception, match="needs a CUDA"):
        resolve_backend_for(own, "torch-cudagraph", cpu)


def test_stopping_asked_tells_the_users_stop_from_the_presets_own(stopping_preset: str) -> None:
    """The one predicate the Cloaker's settings and the backend factory share: a stop_after other than the one its
    strength sets by itself was asked for; the preset's own (and none at all) was not."""
    from comcloak.attacks.presets import PRESETS, preset_config, preset_stop_after, stopping_asked

    for strength in PRESETS:
        own = preset_config(strength)
        assert own.stop_after == preset_stop_after(strength)
        assert not stopping_asked(own)
        assert stopping_asked(preset_config(strength, stop_after=own.stop_after + 2))
    assert not stopping_asked(preset_config("balanced", stop_after=0))
    assert stopping_asked(preset_config(stopping_preset, stop_after=0))  # turning the preset's own off is asking too
    assert not stopping_asked(attack_config("mim", 5 / 255))  # no strength, no stopping
    assert stopping_asked(attack_config("mim", 5 / 255, stop_after=2))
