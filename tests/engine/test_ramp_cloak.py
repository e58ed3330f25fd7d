"""The growing budget (issue 26, ``eps_start``) through the Cloaker: the full-resolution composition holds each photo
to the bound its attack reached (``budget_used`` of its steps), a photo that stopped early changes less than eps
allows, the options on the CLI, the settings hash only when on, and the face cloak refuses it (tiny networks)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from comcloak.attacks.budget import budget_used, full_resolution_budget
from comcloak.attacks.presets import preset_config
from comcloak.codecs.tensors import to_tensor
from comcloak.engine.cloaker import Cloaker, CloakerConfigError

sys.path.insert(0, str(Path(__file__).parent))
from test_budget_backends import half_textured  # noqa: E402 - the texture tests' photos

# Two surrogates, ten steps from 1/255 to 8/255: these photos stop after 6 and 7 steps (margin 0 on every draw).
RAMP = dict(classifier="tiny_classifier,tiny_classifier_b", strength="paper", steps=10, alpha=2, eps=8,
            attack_size=40, device="cpu", stop_after=1, stop_margin=0.0, eps_start=1)


@pytest.mark.parametrize("budget", ["uniform", "texture"])
def test_each_full_resolution_pixel_stays_within_the_budget_its_photo_used(budget: str) -> None:
    photos = [half_textured(120, 160, seed) for seed in (0, 2)]
    cloaker = Cloaker(backend="torch", budget=budget, **RAMP)
    config = cloaker.config
    results = cloaker.cloak_photos(photos)
    assert all(result.steps_used < config.steps for result in results)  # both stopped early
    for photo, result in zip(photos, results):
        used = float(budget_used(config, torch.tensor([result.steps_used]))[0])
        assert used < 1.0
        factors = 1.0 if budget == "uniform" else full_resolution_budget(to_tensor(photo[None], "cpu"), config)[0, 0]
        bound = 255 * config.eps * used * np.asarray(factors)
        change = np.abs(result.cloaked.astype(int) - photo.astype(int)).max(-1)
        assert np.all(change <= np.floor(bound + 0.5 + 1e-3))
        full = 255 * config.eps * np.asarray(factors)  # the constant budget's bound: never reached
        assert change.max() < np.floor(np.max(full) + 0.5)
        if budget == "uniform":
            assert change.max() < config.eps_255


def test_the_options_reach_the_config_and_key_the_settings_hash_only_when_on() -> None:
    from dataclasses import replace

    from comcloak.cli.main import build_parser
    from comcloak.cli.options import attack_config_from_args
    from comcloak.codecs.photos import DEFAULT_WRITE
    from comcloak.engine.archive_options import archive_settings

    parser = build_parser()
    args = parser.parse_args(["cloak", "in.jpg", "-o", "out", "--eps-start", "2", "--eps-ramp", "3"])
    config = attack_config_from_args(args)  # eval and bench offer them too (test_config_declarations)
    assert (config.eps_start, config.eps_ramp) == (2 / 255, 3)
    base = preset_config("balanced")
    off = archive_settings(base, "keep", DEFAULT_WRITE, "fp32")
    assert "eps_start" not in off["config"] and "eps_ramp" not in off["config"]  # as before the ramp existed
    on = archive_settings(replace(base, eps_start=2 / 255), "keep", DEFAULT_WRITE, "fp32")
    assert on["config"]["eps_start"] == 2 / 255 and on != off
    longer = archive_settings(replace(base, eps_start=2 / 255, eps_ramp=3), "keep", DEFAULT_WRITE, "fp32")
    assert longer != on


def test_the_face_cloak_refuses_a_growing_budget() -> None:
    with pytest.raises(CloakerConfigError, match="eps_start applies to the objects cloak") as error:
        Cloaker(protect="faces", eps_start=2, device="cpu")
    assert "\n" not in str(error.value)
    from comcloak.attacks import AttackConfigError
    from comcloak.attacks.faces.settings import face_config

    with pytest.raises(AttackConfigError, match="does not grow its budget"):
        face_config("faces", eps_start=2)
