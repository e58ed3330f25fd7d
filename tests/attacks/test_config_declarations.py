"""Issue 24: one declaration per setting. Each setting's name, default, range and help live on its field of
AttackConfig (or EotSettings); the CLI's options, Cloaker's keywords, preset_config, bench and eval derive from
there, so these tests run over whatever is declared: adding a setting is one declaration plus its use."""

from __future__ import annotations

import argparse
import re

import pytest

from comcloak.attacks import AttackConfigError, attack_config
from comcloak.attacks.config import AttackConfig, Declared, EotSettings, declared_settings
from comcloak.attacks.presets import preset_config
from comcloak.cli.main import build_parser
from comcloak.engine.cloaker import Cloaker, CloakerConfigError

DECLARED = list(declared_settings().values())
# The parsers a declaration's commands name (cloak's options are demo's too).
PARSERS = {"cloak": ("cloak", "demo"), "eval": ("eval",), "bench": ("bench",)}
BASE = {"classifier": "tiny_classifier", "through": "none", "device": "cpu"}
# Values for the text settings (their declaration has no range to draw one from).
TEXT_VALUES = {"strength": "fast", "through": "none", "classifier": "tiny_classifier",
               "classifier_weights": "tiny.safetensors"}


def subparser(command: str) -> argparse.ArgumentParser:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def option(command: str, flag: str) -> argparse.Action:
    return next(a for a in subparser(command)._actions if flag in a.option_strings)


def example(entry: Declared):
    """A valid value of a declared setting, from its declaration (on the user's scale)."""
    declared = entry.setting
    if declared.kind == "choice":
        return declared.choice_values()[0]
    if declared.kind == "flag":
        return True
    if declared.kind == "int":
        return (declared.low or 0) + 1
    if declared.kind == "real":
        return (declared.user_high or declared.high) / 2 if declared.scale != 1 else (declared.low + declared.high) / 2
    if declared.kind == "pair":
        return (declared.low + 0.25 if declared.low_open else declared.low, declared.high or declared.low + 0.5)
    return TEXT_VALUES[entry.keyword]


def shown(config: AttackConfig, entry: Declared):
    """The value a declared setting has in a configuration, on the user's scale."""
    value = getattr(config.eot if entry.owner is EotSettings else config, entry.name)
    return value * entry.setting.scale if entry.setting.scale != 1 else value


@pytest.mark.parametrize("entry", DECLARED, ids=[entry.keyword for entry in DECLARED])
def test_every_keyword_reaches_the_cloakers_config(entry: Declared, monkeypatch) -> None:
    import comcloak.engine.cloaker as cloaker_module
    from comcloak.models import create_model

    # A weights file is only loaded: the tiny network stands in for whatever it would hold.
    monkeypatch.setattr(cloaker_module, "load_classifier", lambda name, weights=None: create_model(name))
    value = example(entry)
    # Settings that need another: a target needs targeted, eps_start at most eps, eps_ramp an eps_start, a budget
    # knob a budget that reads it.
    extra = {"target": {"targeted": True}, "eps_start": {"eps": value}, "eps_ramp": {"eps_start": 1},
             "budget_ceiling": {"budget": "texture"}, "budget_knee": {"budget": "capped"},
             "budget_floor": {"budget": "capped"}}.get(entry.keyword, {})
    cloaker = Cloaker(**{**BASE, **extra, entry.keyword: value})
    if entry.keyword == "attack" and value == "fgsm":  # fgsm takes one step; the preset's steps would be refused
        assert cloaker.config.method == "fgsm"
        return
    assert shown(cloaker.config, entry) == (pytest.approx(value) if entry.setting.kind == "real" else value)


@pytest.mark.parametrize("entry", [e for e in DECLARED if e.setting.commands],
                         ids=[e.keyword for e in DECLARED if e.setting.commands])
def test_every_declared_option_is_offered_with_its_help_and_default(entry: Declared) -> None:
    for command in (name for owner in entry.setting.commands for name in PARSERS[owner]):
        flag = "--size" if (command, entry.keyword) == ("bench", "attack_size") else entry.flag
        action = option(command, flag)
        assert entry.setting.help in action.help or action.help.startswith("registered classifier")
        if entry.setting.choices:
            assert tuple(action.choices) == entry.setting.choice_values()
        # None: not given (a preset's or the per-attack default applies); otherwise the declared default.
        assert action.default in (None, entry.default, False)


def test_bench_eval_and_cloak_options_build_the_same_settings() -> None:
    args = build_parser().parse_args(["cloak", "a.jpg", "-o", "out", "--strength", "fast", "--momentum", "0.5",
                                      "--draws", "3", "--seed", "7"])
    from comcloak.cli.options import attack_config_from_args

    assert attack_config_from_args(args) == preset_config("fast", momentum=0.5, draws=3, seed=7)
    from comcloak.cli.bench import bench_settings

    bench = bench_settings(build_parser().parse_args(["bench", "--json", "x.json", "--size", "48"]))
    assert (bench.size, bench.steps, bench.eps) == (48, declared_settings()["steps"].user_default,
                                                    declared_settings()["eps"].user_default)


@pytest.mark.parametrize("entry", [e for e in DECLARED if e.setting.low is not None and e.setting.kind == "int"],
                         ids=[e.keyword for e in DECLARED if e.setting.low is not None and e.setting.kind == "int"])
def test_the_declared_range_is_what_validate_refuses(entry: Declared) -> None:
    given = {entry.name: entry.setting.low - 1, **({"targeted": True} if entry.name == "target" else {})}
    with pytest.raises(AttackConfigError, match=re.escape(f"{entry.name} must be {entry.setting.describe_range()}")):
        preset_config("fast", **given)


def test_an_unknown_keyword_is_one_line_listing_the_valid_ones() -> None:
    with pytest.raises(CloakerConfigError) as raised:
        Cloaker(epsilon=3, **BASE)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("unknown setting 'epsilon'; valid: ")
    assert all(keyword in message for keyword in declared_settings())
    assert isinstance(raised.value, ValueError)
    with pytest.raises(CloakerConfigError, match="unknown settings 'a', 'b'"):
        Cloaker(a=1, b=2)
    with pytest.raises(AttackConfigError, match="unknown setting 'stepz'; valid: target, through"):
        attack_config("mim", 5 / 255, stepz=3)


def test_the_runtime_keywords_stay_named() -> None:
    cloaker = Cloaker(strength="fast", eps=4, backend="torch", precision="fp32", threads=1, **BASE)
    assert cloaker.config == preset_config("fast", eps=4, classifier="tiny_classifier", through="none")
    assert (cloaker.backend, cloaker.precision, cloaker.threads) == ("torch", "fp32", 1)
