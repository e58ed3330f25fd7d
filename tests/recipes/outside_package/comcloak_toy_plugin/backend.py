"""The backend's one registration line. Torch-free: comcloak imports it to build ``--backend``'s choices."""

from comcloak.engine.backends.registry import BackendInfo, register_backend

register_backend(BackendInfo("toy-plugin-float64", "comcloak_toy_plugin.runner:Float64Runner", ("cpu",), ("fp32",),
                             "torch in float64, from the comcloak-toy-plugin package"))
