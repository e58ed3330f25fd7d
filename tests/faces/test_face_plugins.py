"""Face models from another installed package: the ``comcloak.face_models`` entry-point group joins the face-model
registry before it is first read, once per process."""

from __future__ import annotations

from types import SimpleNamespace

from comcloak import plugins
from comcloak.models.faces import registry
from comcloak.models.faces.registry import create_face_model, face_model_kind, list_face_models, register_face_model
from comcloak.models.faces.sface import tiny_sface


def test_an_installed_face_model_joins_before_the_registry_is_read(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(plugins, "_loaded", set())  # as in a fresh process
    calls = []

    def register() -> None:  # an entry point may name a function; this one reads the registry while it registers
        calls.append(list_face_models())

        @register_face_model("recogniser")
        def plugin_sface() -> object:
            return tiny_sface(seed=7)

    entry = SimpleNamespace(name="plugin", dist=None, load=lambda: register)
    monkeypatch.setattr(plugins.metadata, "entry_points",
                        lambda group: [entry] if group == plugins.FACE_MODELS else [])
    assert "plugin_sface" in list_face_models("recogniser") and face_model_kind("plugin_sface") == "recogniser"
    assert create_face_model("plugin_sface").fc.weight.shape == tiny_sface().fc.weight.shape
    assert "plugin_sface" not in calls[0] and len(calls) == 1  # loaded once, however often the registry is read
