"""The exported step's I/O schema and StepSpec, the one object a step graph is built from (no export runs here)."""

from __future__ import annotations

import dataclasses

import torch

import comcloak.models as M
from comcloak.attacks import attack_config
from comcloak.attacks.config import EotSettings
from comcloak.attacks.eot import DRAW_INPUTS, DrawSampler
from comcloak.export import StepLayout, StepSpec
from comcloak.export.gradient import RobustAttackStep, goal_weights
from comcloak.export.onnx_export import step_module
from comcloak.export.step_io import INPUT_NAMES, example_inputs

EOT = EotSettings(draws=3, view_size=16, through_rate=0.6)


def test_step_spec_is_the_configs_loss_and_draws() -> None:
    config = dataclasses.replace(attack_config("mim", 5 / 255, loss="margin"), eot=EOT)
    spec = StepSpec.from_config(config)
    assert spec == StepSpec("margin", EOT)
    assert StepSpec() == StepSpec("ce", EotSettings())
    assert spec.layout(2, 1) == StepLayout(2, 3, 1, 16, "margin", EOT.coded_draws)
    assert StepSpec("margin").layout(2, 1) == StepLayout(2, loss="margin")
    assert spec.layout(2, 1).input_names == (*INPUT_NAMES, *DRAW_INPUTS)


def test_step_module_follows_the_spec() -> None:
    classifier = M.freeze(M.create_model("tiny_classifier"))
    step, layout = step_module(classifier, None, 24, 24, StepSpec("margin", EOT))
    assert isinstance(step, RobustAttackStep) and not step.training
    assert (step.draws, step.coded_draws, step.loss_kind) == (3, EOT.coded_draws, "margin")
    assert layout == StepLayout(1, 3, 0, 16, "margin", EOT.coded_draws)
    plain, plain_layout = step_module(classifier, None, 24, 24, StepSpec())
    assert plain_layout == StepLayout() and plain.loss_kind == "ce"


def test_the_robust_step_takes_the_draw_as_trailing_inputs() -> None:
    """forward(x, x0, m, w, eps, alpha, mu, budget, *draw): the draw's tensors in DRAW_INPUTS order, as the graph's
    inputs."""
    classifier = M.freeze(M.create_model("tiny_classifier"))
    step, layout = step_module(classifier, None, 24, 24, StepSpec("ce", EOT))
    inputs = example_inputs(2, 24, 24, 1000, torch.Generator().manual_seed(0), layout, EOT)
    assert len(inputs) == len(layout.input_names) == len(INPUT_NAMES) + len(DRAW_INPUTS)
    with torch.no_grad():
        x_next, m_next, logits, loss = step(*inputs)
    assert x_next.shape == m_next.shape == inputs[0].shape and logits.shape == (2, 1, EOT.draws, 1000)
    assert loss.shape == (2,)
    draw = DrawSampler(EOT, 0, seed=1).sample(2, 24, 24)
    w = goal_weights(torch.tensor([[1], [2]]), 1000, False)
    scalars = [torch.tensor([v]) for v in (5 / 255, 1 / 255, 0.0)]
    with torch.no_grad():
        by_name = step(inputs[0], inputs[1], torch.zeros_like(inputs[0]), w, *scalars, inputs[7],
                       *draw.tensors().values())
    assert by_name[0].shape == inputs[0].shape
