"""Recipe: add a backend (docs/DESIGN.md §7). A runner class in one file and one ``register_backend`` line make a
backend that ``--backend``, ``comcloak bench``, ``--help`` and the ``Cloaker`` offer; another package ships it through
the entry-point group ``comcloak.backends`` and the installed ``comcloak`` command runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from outside_plugin import BACKEND, FAST, InstalledCli, install_outside_package, warning_lines

from comcloak.attacks import run_attack
from comcloak.engine.backends import AttackRunner, RunnerContext, registry
from comcloak.engine.backends.registry import BackendInfo, backend_choices, register_backend
from comcloak.engine.cloaker import Cloaker


class CountingRunner(AttackRunner):
    """The reference loop as it is, counting its batches: the smallest backend there is."""

    name = "recipe-eager"
    batches = 0

    def __init__(self, classifier: torch.nn.Module, through: torch.nn.Module | None, config) -> None:
        super().__init__(config)
        self.classifier, self.through = classifier, through

    @classmethod
    def from_context(cls, context: RunnerContext) -> CountingRunner:
        return cls(context.classifier, context.through, context.config)

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        CountingRunner.batches += 1
        return run_attack(self.classifier, x0, goal, self.config, self.through)


def test_a_backend_added_through_the_registry_runs_in_the_cloaker(monkeypatch, sample_photos) -> None:
    photo = sample_photos["chelsea"][:96, :128]
    settings = dict(classifier="tiny_classifier", through="comodel:jpeg:50", eps=4, steps=2, attack_size=48,
                    device="cpu")
    with monkeypatch.context() as patch:
        patch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # registered for this test only
        register_backend(BackendInfo("recipe-eager", f"{__name__}:CountingRunner", ("cpu",), ("fp32",),
                                     "the reference loop, a recipe test"))  # the one registration line
        cloaker = Cloaker(backend="recipe-eager", **settings)
        cloaked = cloaker.cloak(photo[None])[0]
    assert cloaker.backend == "recipe-eager" and CountingRunner.batches == 1
    assert "recipe-eager" not in backend_choices()  # the registry is as it was
    reference = Cloaker(backend="torch", **settings).cloak(photo[None])[0]
    assert np.array_equal(cloaked, reference)  # the same loop as the torch backend, so the same pixels


@pytest.fixture(scope="module")
def installed(tmp_path_factory, sample_photos) -> InstalledCli:
    return install_outside_package(tmp_path_factory.mktemp("plugin"), sample_photos["chelsea"][:96, :128])


def test_the_installed_cli_runs_a_backend_from_another_package(installed: InstalledCli, tmp_path: Path) -> None:
    out, report, marker = tmp_path / "out", tmp_path / "report.json", tmp_path / "marker.txt"
    done = installed.run("cloak", str(installed.photo), "-o", str(out), "--report", str(report), "--backend",
                         BACKEND, "--classifier", "tiny_classifier", *FAST, marker=marker)
    assert done.returncode == 0, done.stderr
    assert (out / "cat.png").is_file()
    assert json.loads(report.read_text())["settings"]["backend"] == BACKEND
    assert marker.read_text().splitlines() == [f"{BACKEND} (1, 3, 48, 64)"]  # the plugin's runner attacked it
    assert len(warning_lines(done.stderr)) == 1  # the broken plugin: one warning per process, however often listed


def test_the_installed_cli_offers_the_plugin_backend_in_help(installed: InstalledCli) -> None:
    helps = {command: installed.run(command, "--help") for command in ("cloak", "bench")}
    assert all(done.returncode == 0 and BACKEND in done.stdout for done in helps.values())
    described = " ".join(helps["cloak"].stdout.split())  # argparse wraps the --backend help
    assert f"{BACKEND} (torch in float64, from the comcloak-toy-plugin package)" in described


def test_a_broken_plugin_is_left_out_with_one_warning(installed: InstalledCli) -> None:
    done = installed.run("cloak", "--help")
    assert done.returncode == 0 and BACKEND in done.stdout  # the other plugin and the CLI still work
    [warning] = warning_lines(done.stderr)
    assert "broken on purpose" in warning
    assert "broken" not in done.stdout.replace(BACKEND, "")  # not offered as a backend
