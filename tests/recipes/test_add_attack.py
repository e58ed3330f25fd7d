"""Recipe: add an attack method with its defaults in one registration line, no comcloak file touched
(docs/DESIGN.md §7).

A method is a setting of the one loop (docs/DESIGN.md §2): its defaults (steps, momentum; alpha is eps / steps) and
what it refuses. The toy ``mim3`` is MIM with 3 steps and μ = 0.5 by default; ``bim-once`` is a one-step BIM that
refuses more steps. Once registered, ``attack_config`` fills them in and ``run_attack`` runs them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from comcloak.attacks import AttackConfigError, attack_config, run_attack
from comcloak.attacks.methods import (
    AttackMethod,
    attack_method_names,
    register_attack_method,
    unregister_attack_method,
)
from comcloak.models import create_model

EPS = 6 / 255
TOYS = (
    AttackMethod("mim3", "MIM, 3 steps, half momentum", steps=3, momentum=0.5, takes_momentum=True),
    AttackMethod("bim-once", "one BIM step", steps=1, fixed_steps=True),
)


@pytest.fixture()
def toys() -> Iterator[tuple[AttackMethod, ...]]:
    for method in TOYS:
        register_attack_method(method)  # one registration line each
    yield TOYS
    for method in TOYS:
        unregister_attack_method(method.name)
    assert not set(attack_method_names()) & {method.name for method in TOYS}


def test_attack_config_fills_in_its_defaults(toys) -> None:
    config = attack_config("MIM3", EPS)  # names are case-insensitive, as the shipped ones
    assert (config.method, config.steps, config.alpha, config.momentum) == ("mim3", 3, EPS / 3, 0.5)
    assert attack_config("mim3", EPS, steps=5, momentum=1.0).momentum == 1.0  # what a user gives wins
    once = attack_config("bim-once", EPS)
    assert (once.steps, once.alpha, once.momentum) == (1, EPS, 0.0)
    with pytest.raises(AttackConfigError, match="bim-once takes exactly one step, got steps=2"):
        attack_config("bim-once", EPS, steps=2)
    with pytest.raises(AttackConfigError, match="bim-once has no momentum; use mim or mim3"):
        attack_config("bim-once", EPS, momentum=0.5)


def test_run_attack_runs_it_as_the_same_numbers_would(toys) -> None:
    torch.manual_seed(0)
    classifier = create_model("tiny_classifier").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = classifier(x).argmax(1)
    ours = run_attack(classifier, x, labels, attack_config("mim3", EPS))
    same = run_attack(classifier, x, labels, attack_config("mim", EPS, steps=3, momentum=0.5))
    assert torch.equal(ours, same)  # one loop: a method is only its numbers
    once = run_attack(classifier, x, labels, attack_config("bim-once", EPS))
    assert torch.equal(once, run_attack(classifier, x, labels, attack_config("fgsm", EPS)))


def test_the_registry_is_clean_again() -> None:
    assert "mim3" not in attack_method_names() and "bim-once" not in attack_method_names()
