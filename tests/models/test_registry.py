from __future__ import annotations

import pytest
import torch

import comcloak.models as M
from comcloak.models import registry

SHIPPED = [  # the families comcloak ships; a plugin or a test may register more
    "comodel", "comodel_tc", "comodel_tc_tiny", "comodel_tiny", "efficientnet_lite0", "efficientnet_lite1",
    "efficientnet_lite2", "mobilenet_v2", "resnet50", "tiny_classifier", "tiny_classifier_b",
]


@pytest.mark.parametrize("name", SHIPPED)
def test_list_models_has_every_family(name: str) -> None:
    assert name in M.list_models()
    assert M.is_model(name)


def test_list_models_filters_sorted_names() -> None:
    names = M.list_models()
    assert names == sorted(names)
    assert M.list_models("mobile*") == [name for name in names if name.startswith("mobile")]
    assert "mobilenet_v2" in M.list_models("mobile*")
    comodels = M.list_models("comodel")  # a substring
    assert comodels == [name for name in names if "comodel" in name]
    assert {"comodel", "comodel_tc", "comodel_tc_tiny", "comodel_tiny"} <= set(comodels)
    assert M.list_models("nothing*") == []


def test_create_model_passes_kwargs() -> None:
    model = M.create_model("tiny_classifier", num_classes=10)
    assert isinstance(model, M.ImageClassifier)
    assert model(torch.rand(2, 3, 40, 56)).shape == (2, 10)


@pytest.mark.parametrize("name", M.list_models())
def test_unknown_model_error_names_request_and_choices(name: str) -> None:
    with pytest.raises(M.UnknownModelError) as info:
        M.create_model("resnet5")
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in msg
    assert "'resnet5'" in msg
    assert name in msg


def test_duplicate_registration_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def tiny_classifier() -> torch.nn.Module:  # same name as a real model
        return torch.nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        M.register_model(tiny_classifier)


def test_register_model_uses_function_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @M.register_model
    def my_test_net(scale: int = 1) -> torch.nn.Module:
        return torch.nn.Linear(scale, scale)

    assert "my_test_net" in M.list_models()
    assert M.is_model("my_test_net")
    assert M.create_model("my_test_net", scale=3).in_features == 3
