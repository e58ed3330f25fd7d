"""The backend registry: one runner class plus one registration line make a backend that the CLI, resolve_backend,
the Cloaker and comcloak bench all use, with no other file touched."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from comcloak import plugins
from comcloak.cli.main import build_parser
from comcloak.engine.backends import registry
from comcloak.engine.backends.factory import available_backends, resolve_backend
from comcloak.engine.backends.registry import (
    BackendInfo,
    BackendUnavailableError,
    backend_choices,
    backend_names,
    get_backend,
    register_backend,
)
from comcloak.engine.cloaker import Cloaker
from comcloak.engine.throughput import BenchSettings, measure_in_subprocess

TOY = BackendInfo("toy-float64", "toy_backend:Float64Runner", ("cpu",), ("fp32",), "torch in float64, a test backend")


@pytest.fixture()
def toy(monkeypatch) -> BackendInfo:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # registered for this test only
    return register_backend(TOY)  # the one registration line


def test_a_registered_backend_is_offered_everywhere(toy: BackendInfo) -> None:
    assert "toy-float64" in backend_choices()
    args = build_parser().parse_args(["cloak", "a.jpg", "-o", "out", "--backend", "toy-float64"])
    assert args.backend == "toy-float64"
    cpu = torch.device("cpu")
    assert resolve_backend("toy-float64", cpu) == "toy-float64"
    assert "toy-float64" not in available_backends(cpu)  # no auto_rank: auto never picks it
    with pytest.raises(BackendUnavailableError, match="'toy-float64' cannot run here: it needs a CPU device"):
        resolve_backend("toy-float64", torch.device("cuda"))
    with pytest.raises(BackendUnavailableError, match="precision bf16 applies to the torch"):
        resolve_backend("toy-float64", cpu, precision="bf16")


def test_the_cloaker_runs_a_registered_backend(toy: BackendInfo, sample_photos) -> None:
    photo = sample_photos["chelsea"][:96, :128]
    settings = dict(classifier="tiny_classifier", through="comodel:jpeg:50", eps=4, steps=3, attack_size=48)
    cloaker = Cloaker(backend="toy-float64", **settings)
    assert cloaker.backend == "toy-float64"
    cloaked = cloaker.cloak(photo[None])[0].astype(int)
    reference = Cloaker(backend="torch", **settings).cloak(photo[None])[0].astype(int)
    assert np.abs(cloaked - photo.astype(int)).max() <= 4
    assert (np.abs(cloaked - reference) <= 1).mean() >= 0.99  # float64 and float32 agree up to rounding


def test_bench_measures_a_registered_backend(toy: BackendInfo) -> None:
    settings = BenchSettings(classifier="tiny_classifier", through="none", steps=1, size=32, min_seconds=0,
                             threads=1)
    result = measure_in_subprocess("toy-float64", "fp32", 2, settings, None)  # the child gets the parent's entry
    assert (result.backend, result.precision, result.batch) == ("toy-float64", "fp32", 2)
    assert result.images_per_s > 0


def test_an_installed_plugin_joins_before_the_registry_is_listed(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(plugins, "_loaded", set())  # as in a fresh process

    calls = []

    def register() -> None:  # an entry point may name a function; this one lists the registry while it registers
        calls.append(backend_names())
        register_backend(TOY)

    entry = SimpleNamespace(name="toy", dist=None, load=lambda: register)
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: [entry] if group == plugins.BACKENDS else [])
    assert backend_names()[-1] == "toy-float64" and get_backend("toy-float64") is TOY
    assert "toy-float64" in backend_choices() and "toy-float64" not in calls[0]
    assert len(calls) == 1  # loaded once per process, however often the registry is read


def test_building_the_parser_does_not_import_torch() -> None:
    code = "import sys; from comcloak.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
