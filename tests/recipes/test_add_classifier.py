"""Recipe: add a classifier (docs/DESIGN.md §7). One ``@register_model`` factory makes a classifier that
``--classifier`` and the ``Cloaker`` accept; another package ships it through the entry-point group
``comcloak.classifiers`` and the installed ``comcloak`` command cloaks against it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from outside_plugin import CLASSIFIER, FAST, InstalledCli, install_outside_package

from comcloak.engine.cloaker import Cloaker
from comcloak.models import TinyClassifier, is_model, load_pretrained, register_model, registry, save_safetensors


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A weights file for the tiny architecture (seed 3): what a user passes as --classifier-weights."""
    return save_safetensors(TinyClassifier(seed=3).state_dict(), tmp_path_factory.mktemp("weights") / "toy.safetensors")


def test_a_classifier_added_through_the_registry_is_cloaked_against(monkeypatch, sample_photos, weights) -> None:
    photo = sample_photos["chelsea"][:96, :128]
    with monkeypatch.context() as patch:
        patch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # registered for this test only

        @register_model  # the one registration line: the factory's name is the classifier's name
        def recipe_classifier(num_classes: int = 1000, pretrained: bool | str = False) -> TinyClassifier:
            return load_pretrained(TinyClassifier(num_classes), pretrained, None, "recipe_classifier").eval()

        cloaker = Cloaker(classifier="recipe_classifier", classifier_weights=str(weights), through="none", eps=4,
                          steps=2, attack_size=48, device="cpu")
        cloaked = cloaker.cloak(photo[None])[0]
    assert not is_model("recipe_classifier")  # the registry is as it was
    expected = TinyClassifier(seed=3).state_dict()  # the weights file's, not the factory's own (seed 0) init
    assert all(torch.equal(value, expected[name]) for name, value in cloaker.classifier.state_dict().items())
    assert 0 < np.abs(cloaked.astype(int) - photo.astype(int)).max() <= 4


@pytest.fixture(scope="module")
def installed(tmp_path_factory, sample_photos) -> InstalledCli:
    return install_outside_package(tmp_path_factory.mktemp("plugin"), sample_photos["chelsea"][:96, :128])


def test_the_installed_cli_cloaks_against_a_classifier_from_another_package(installed: InstalledCli, weights: Path,
                                                                             tmp_path: Path) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    done = installed.run("cloak", str(installed.photo), "-o", str(out), "--report", str(report), "--classifier",
                         CLASSIFIER, "--classifier-weights", str(weights), *FAST)
    assert done.returncode == 0, done.stderr
    assert (out / "cat.png").is_file()
    written = json.loads(report.read_text())
    assert written["settings"]["classifier"] == CLASSIFIER
    assert [record["status"] for record in written["photos"]] == ["cloaked"]


def test_the_installed_cli_names_plugin_classifiers_for_an_unknown_one(installed: InstalledCli,
                                                                       tmp_path: Path) -> None:
    done = installed.run("cloak", str(installed.photo), "-o", str(tmp_path / "out"), "--classifier", "nope", *FAST)
    [error] = [line for line in done.stderr.splitlines() if "error:" in line]
    assert done.returncode != 0
    assert "unknown model 'nope'" in error and CLASSIFIER in error and "tiny_classifier" in error


def test_a_plugin_classifier_without_weights_asks_for_them(installed: InstalledCli, tmp_path: Path) -> None:
    done = installed.run("cloak", str(installed.photo), "-o", str(tmp_path / "out"), "--classifier", CLASSIFIER,
                         *FAST)
    assert done.returncode != 0
    assert "--classifier-weights PATH" in done.stderr and CLASSIFIER in done.stderr
