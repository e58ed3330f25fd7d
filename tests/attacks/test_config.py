"""The one attack configuration: built once from user values (0-255), the same object from the CLI, the Cloaker's
keyword arguments and ``Cloaker(config=...)``, and what ``Cloaker.config`` shows."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comcloak import defaults
from comcloak.attacks import AttackConfig, AttackConfigError, attack_config
from comcloak.attacks.config import EotSettings
from comcloak.attacks.presets import PRESETS, preset_config
from comcloak.cli.main import build_parser, main
from comcloak.cli.options import attack_config_from_args
from comcloak.engine.cloaker import Cloaker, CloakerConfigError


def test_user_values_are_converted_once_and_shown_back() -> None:
    config = AttackConfig.from_user("bim", eps=6, steps=4, alpha=2)
    assert config == attack_config("bim", 6 / 255, 4, 2 / 255)
    assert config.eps_255 == pytest.approx(6) and config.alpha_255 == pytest.approx(2)
    assert (config.through, config.classifier, config.attack_size) == (defaults.THROUGH, defaults.CLASSIFIER, 224)
    default = AttackConfig.from_user()
    assert (default.method, default.eps_255, default.steps) == (defaults.ATTACK, defaults.EPS, defaults.STEPS)
    assert default.alpha_255 == pytest.approx(defaults.EPS / defaults.STEPS)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eps": 0}, "eps must be in \\(0, 64\\]"),
    ({"eps": 100}, "eps must be in \\(0, 64\\]"),  # issue 23: the CLI's ceiling, not 255
    ({"alpha": 0}, "alpha must be in \\(0, 64\\]"),
    ({"alpha": 100}, "alpha must be in \\(0, 64\\]"),  # as --alpha: one ceiling for the CLI, server and library
    ({"target": 3}, "target is only meaningful with targeted=True"),
    ({"attack_size": 8}, "attack_size must be at least 16"),
    ({"method": "pgd"}, "unknown attack 'pgd'; available: fgsm, bim, mim"),
    ({"method": "fgsm", "steps": 3}, "fgsm takes exactly one step"),
])
def test_bad_values_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(AttackConfigError, match=message):
        AttackConfig.from_user(**kwargs)


def test_the_cli_builds_the_config_the_cloaker_runs() -> None:
    args = build_parser().parse_args(["cloak", "a.jpg", "-o", "out", "--classifier", "tiny_classifier", "--eps", "4",
                                      "--steps", "3", "--target", "7", "--attack-size", "48", "--check", "webp:75"])
    config = attack_config_from_args(args)
    # The balanced preset, with every option given winning over it; its stand-in does not follow --check.
    assert config == preset_config("balanced", eps=4, steps=3, targeted=True, target=7, classifier="tiny_classifier",
                                   attack_size=48)
    assert (config.through, config.loss, config.eot.draws, config.strength) == (
        "comodel:jpeg:50", "margin", PRESETS["balanced"].draws, "balanced")
    from_keywords = Cloaker(classifier="tiny_classifier", eps=4, steps=3, targeted=True, target=7, attack_size=48,
                            device="cpu")
    assert from_keywords.config == config == Cloaker(config, device="cpu").config


def test_the_paper_strength_attacks_through_the_stand_in_of_the_check_codec() -> None:
    args = build_parser().parse_args(["cloak", "a.jpg", "-o", "out", "--strength", "paper", "--check", "webp:75"])
    config = attack_config_from_args(args)
    assert config == AttackConfig.from_user("mim", 5, 10, through="comodel:webp:75", eot=EotSettings(draws=0),
                                            strength="paper")


@pytest.mark.parametrize("strength", sorted(PRESETS))
def test_each_preset_is_valid_and_given_values_win(strength: str) -> None:
    preset = PRESETS[strength]
    config = preset_config(strength)
    assert (config.eps_255, config.steps, config.eot.draws, config.attack_size, config.loss) == (
        preset.eps, preset.steps, preset.draws, preset.attack_size, preset.loss)
    assert "efficientnet_lite1" not in config.classifiers and "efficientnet_lite2" not in config.classifiers
    overridden = preset_config(strength, eps=3, draws=0, loss="ce", classifier="tiny_classifier")
    assert (overridden.eps_255, overridden.eot.draws, overridden.loss, overridden.classifiers) == (
        3, 0, "ce", ("tiny_classifier",))
    assert preset_config(strength, method="fgsm").steps == 1


def test_bad_strengths_and_ensembles_are_user_errors() -> None:
    with pytest.raises(AttackConfigError, match="unknown strength 'max'"):
        preset_config("max")
    with pytest.raises(AttackConfigError, match="names a surrogate twice"):
        preset_config("fast", classifier="tiny_classifier,tiny_classifier")
    with pytest.raises(AttackConfigError, match="comma-separated list"):
        preset_config("fast", classifier="tiny_classifier,")
    with pytest.raises(AttackConfigError, match="one classifier, not to an ensemble"):
        preset_config("fast", classifier="a,b", classifier_weights="w.safetensors")
    with pytest.raises(AttackConfigError, match="unknown loss 'hinge'"):
        preset_config("fast", loss="hinge")
    with pytest.raises(AttackConfigError, match="draws must be 0"):
        preset_config("fast", draws=-1)


def test_config_and_keyword_arguments_do_not_mix() -> None:
    config = AttackConfig.from_user(classifier="tiny_classifier", through="none")
    with pytest.raises(CloakerConfigError, match="either config or the attack keyword arguments.*eps"):
        Cloaker(config, eps=3)


def test_a_module_classifier_goes_with_a_config(sample_photos) -> None:
    import comcloak.models as M

    config = AttackConfig.from_user(classifier="tiny_classifier", through="none", steps=2, attack_size=32)
    cloaker = Cloaker(config, classifier=M.create_model("tiny_classifier"), device="cpu")
    assert cloaker.config is config
    photo = sample_photos["chelsea"][:64, :64]
    assert np.abs(cloaker.cloak(photo[None])[0].astype(int) - photo).max() <= 5


def test_the_report_records_the_config(tmp_path: Path, sample_photos, capsys) -> None:
    Image.fromarray(sample_photos["coffee"][:64, :96]).save(tmp_path / "coffee.png")
    report = tmp_path / "report.json"
    code = main(["cloak", str(tmp_path / "coffee.png"), "-o", str(tmp_path / "out"), "--classifier",
                 "tiny_classifier", "--steps", "2", "--attack-size", "32", "--eps", "3", "--report", str(report), "-q"])
    assert code == 0
    recorded = json.loads(report.read_text())["settings"]["config"]
    expected = preset_config("balanced", eps=3, steps=2, classifier="tiny_classifier", attack_size=32)
    assert recorded == json.loads(json.dumps(asdict(expected)))


def test_a_classifier_name_in_the_config_place_is_refused() -> None:
    with pytest.raises(CloakerConfigError, match="config must be an AttackConfig, got str"):
        Cloaker("tiny_classifier")
