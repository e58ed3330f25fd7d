"""The stand-in, loss and attack-method registries: every registered entry is offered where its kind is named, and
each registry loads its entry-point group before it lists or looks up a name."""

from __future__ import annotations

import pytest
import torch

from comcloak import plugins
from comcloak.attacks import AttackConfigError, attack_config
from comcloak.attacks.loss_registry import UnknownLossError, get_loss, loss_names
from comcloak.attacks.methods import attack_method_names, find_attack_method, registered_attack_methods
from comcloak.attacks.through import ThroughSpecError, make_through, registered_throughs
from comcloak.cli.main import build_parser

EPS = 4 / 255


@pytest.mark.parametrize("info", registered_throughs(), ids=lambda info: info.name)
def test_every_stand_in_is_named_by_the_unknown_spec_error(info) -> None:
    with pytest.raises(ThroughSpecError) as error:
        make_through("no-such-stand-in:1")
    assert all(usage in str(error.value) for usage in info.usages)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", loss_names())
def test_every_loss_is_accepted_and_has_a_value_and_gradient(name: str) -> None:
    implementation = get_loss(name).load()
    logits, w = torch.randn(2, 5, dtype=torch.float64), -torch.eye(5, dtype=torch.float64)[:2]
    assert implementation.value(logits, w).shape == (2,)
    assert implementation.gradient(logits, w).shape == (2, 5)
    assert attack_config("bim", EPS, loss=name).loss == name
    assert build_parser().parse_args(["cloak", "a.jpg", "-o", "out", "--loss", name]).loss == name


def test_an_unknown_loss_names_the_known_ones() -> None:
    with pytest.raises(UnknownLossError) as error:
        get_loss("hinge")
    assert str(error.value) == f"unknown loss 'hinge'; available: {', '.join(loss_names())}"


@pytest.mark.parametrize("name", attack_method_names())
def test_every_attack_method_fills_in_its_defaults(name: str) -> None:
    method = find_attack_method(name)
    config = attack_config(name, EPS)
    assert (config.method, config.steps, config.momentum) == (name, method.steps, method.momentum)
    assert config.alpha == (EPS if method.steps == 1 else EPS / method.steps)
    assert build_parser().parse_args(["cloak", "a.jpg", "-o", "out", "--attack", name]).attack == name


@pytest.mark.parametrize("method", registered_attack_methods(), ids=lambda method: method.name)
def test_what_a_method_does_not_take_is_refused(method) -> None:
    if not method.takes_momentum:
        with pytest.raises(AttackConfigError, match=f"{method.name} has no momentum"):
            attack_config(method.name, EPS, momentum=0.5)
    if method.fixed_steps:
        with pytest.raises(AttackConfigError, match=f"{method.name} takes exactly"):
            attack_config(method.name, EPS, steps=method.steps + 1)


def test_the_registries_load_their_entry_point_groups_first(monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[str] = []
    monkeypatch.setattr(plugins, "load_plugins", lambda group: groups.append(group) or [])
    loss_names()
    get_loss("ce")
    attack_method_names()
    find_attack_method("bim")
    registered_throughs()
    make_through("none")
    assert groups == [plugins.LOSSES] * 2 + [plugins.ATTACKS] * 2 + [plugins.THROUGHS] * 2
