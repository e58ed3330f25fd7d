"""Shared fixtures and the marker policy: ``slow`` runs only with --runslow; ``gpu``/``trt`` skip when absent."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skips = {
        "slow": None if config.getoption("--runslow") else pytest.mark.skip(reason="slow: pass --runslow"),
        "gpu": None if torch.cuda.is_available() else pytest.mark.skip(reason="gpu: no CUDA device"),
        "trt": None if importlib.util.find_spec("tensorrt") else pytest.mark.skip(reason="trt: tensorrt missing"),
    }
    for item in items:
        for marker, skip in skips.items():
            if skip is not None and marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_photos() -> dict[str, np.ndarray]:
    """The bundled sample photos as uint8 RGB arrays."""
    from comcloak.codecs.photos import load_photo
    from comcloak.samples import sample_photos as paths

    return {path.stem: load_photo(path).pixels for path in paths()}
