"""The exported robust step the tests/export files share: the two tiny surrogates and one tiny ComModel stand-in at
40x56, the margin loss, exported (self-check included) once per draw settings for the whole session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from step_models import HEIGHT, WIDTH, tiny_stand_in, tiny_surrogates

from comcloak.attacks.config import EotSettings
from comcloak.export import OnnxFromTorch
from comcloak.export.step_io import StepSpec


@pytest.fixture(scope="session")
def export_step(tmp_path_factory: pytest.TempPathFactory) -> Callable[[EotSettings], tuple[Path, OnnxFromTorch]]:
    """``export_step(eot)``: the step graph's path and its exporter (``.report``: self-check, ops) for ``eot``."""
    exported: dict[EotSettings, tuple[Path, OnnxFromTorch]] = {}

    def export(eot: EotSettings) -> tuple[Path, OnnxFromTorch]:
        if eot not in exported:
            path = tmp_path_factory.mktemp("step") / "step.onnx"
            loader = OnnxFromTorch(torch.nn.ModuleList(tiny_surrogates(2)), tiny_stand_in(), HEIGHT, WIDTH, path,
                                   {"classifier": "tiny ensemble"}, spec=StepSpec("margin", eot))
            loader()
            exported[eot] = path, loader
        return exported[eot]

    return export
