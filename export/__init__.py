"""comcloak.export: VJP rules over ``torch.fx`` graphs, the attack step as forward ops, ONNX export (docs/DESIGN.md §4).

TensorRT engines are built from the exported ONNX by ``comcloak.engine.backends.EngineFromOnnx``.
"""

from .gradient import AttackStep, InputGradient, StaticSizeThrough, ThroughThenClassify, goal_weights
from .onnx_export import (
    GRADIENT_TOLERANCE,
    TENSORRT_ONNX_OPS,
    ExportError,
    ExportReport,
    OnnxDependencyError,
    OnnxFromTorch,
    SelfCheck,
    export_attack_step,
    read_export_metadata,
    tensorrt_op_violations,
)
from .step_io import StepLayout, StepSpec
from .vjp import UnsupportedLayerError, register_vjp, supported_layers

__all__ = [
    "GRADIENT_TOLERANCE",
    "TENSORRT_ONNX_OPS",
    "AttackStep",
    "ExportError",
    "ExportReport",
    "SelfCheck",
    "InputGradient",
    "OnnxDependencyError",
    "OnnxFromTorch",
    "StaticSizeThrough",
    "StepLayout",
    "StepSpec",
    "ThroughThenClassify",
    "UnsupportedLayerError",
    "export_attack_step",
    "goal_weights",
    "read_export_metadata",
    "register_vjp",
    "supported_layers",
    "tensorrt_op_violations",
]
