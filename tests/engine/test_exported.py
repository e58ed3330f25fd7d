"""The exported-step runner base: the I/O schema, the ping-pong between steps and which buffer holds the result."""

from __future__ import annotations

import pytest

from comcloak.attacks.eot import DRAW_INPUTS
from comcloak.engine.backends.exported import final_iterate_name, ping_pong
from comcloak.export.onnx_export import INPUT_NAMES, OUTPUT_NAMES, StepLayout, step_tensor_shapes


def test_the_schema_covers_every_input_and_output() -> None:
    shapes = step_tensor_shapes(4, 32, 48, 10)
    assert set(shapes) == set(INPUT_NAMES) | set(OUTPUT_NAMES)
    assert shapes["x"] == shapes["x_next"] == shapes["m"] == (4, 3, 32, 48)
    assert shapes["w"] == shapes["logits"] == (4, 1, 10) and shapes["loss"] == (4,) and shapes["eps"] == (1,)


def test_a_robust_schema_adds_the_draws() -> None:
    layout = StepLayout(surrogates=2, draws=3, stand_ins=1, view_size=24, loss="margin", coded_draws=2)
    shapes = step_tensor_shapes(4, 32, 48, 10, layout)
    assert set(shapes) == set(layout.input_names) | set(OUTPUT_NAMES) == set(INPUT_NAMES) | set(OUTPUT_NAMES) | set(
        DRAW_INPUTS)
    assert shapes["w"] == (4, 2, 10) and shapes["logits"] == (4, 2, 3, 10)  # each draw's (graph format 6)
    assert (shapes["pre_h"], shapes["pre_w"], shapes["mix"]) == ((4, 3, 32, 32), (4, 3, 48, 48), (4, 3, 2))
    assert (shapes["post_h"], shapes["post_w"]) == ((4, 3, 24, 32), (4, 3, 24, 48))
    assert StepLayout.from_metadata(layout.metadata()) == layout


def test_steps_alternate_between_the_two_buffer_pairs() -> None:
    assert ping_pong(0) == {"x": "x_a", "x_next": "x_b", "m": "m_a", "m_next": "m_b"}
    assert ping_pong(1) == {"x": "x_b", "x_next": "x_a", "m": "m_b", "m_next": "m_a"}
    for step in range(5):  # each step reads what the previous one wrote
        assert ping_pong(step + 1)["x"] == ping_pong(step)["x_next"]


@pytest.mark.parametrize(("steps", "buffer"), [(1, "x_b"), (2, "x_a"), (10, "x_a"), (11, "x_b")])
def test_the_final_iterate_is_where_the_last_step_wrote(steps: int, buffer: str) -> None:
    assert final_iterate_name(steps) == buffer
