"""comcloak.models: classifiers and ComModel (own architecture code), registry, weights I/O, ImageNet labels.

Importing this package registers every model: ``create_model("efficientnet_lite0")``, ``list_models()``.
"""

from . import comodel_io
from .classifier import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from .comodel import ComModel, comodel, comodel_tiny
from .comodel_tc import TransformComModel, TransformComModelConfig, comodel_tc, comodel_tc_tiny
from .efficientnet_lite import EfficientNetLite, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2
from .labels import IMAGENET_NUM_CLASSES, imagenet_class_name
from .mobilenetv2 import MobileNetV2, mobilenet_v2
from .padding import same_padding
from .registry import UnknownModelError, create_model, is_model, list_models, register_model
from .resnet import ResNet, resnet50
from .tiny import TinyClassifier, tiny_classifier
from .weights import (
    WeightsError,
    freeze,
    load_pretrained,
    load_state_dict_file,
    load_weights,
    read_safetensors_metadata,
    save_safetensors,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_NUM_CLASSES",
    "IMAGENET_STD",
    "ComModel",
    "EfficientNetLite",
    "ImageClassifier",
    "MobileNetV2",
    "ResNet",
    "TinyClassifier",
    "UnknownModelError",
    "WeightsError",
    "TransformComModel",
    "TransformComModelConfig",
    "comodel",
    "comodel_io",
    "comodel_tc",
    "comodel_tc_tiny",
    "comodel_tiny",
    "create_model",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "freeze",
    "imagenet_class_name",
    "is_model",
    "list_models",
    "load_pretrained",
    "load_state_dict_file",
    "load_weights",
    "mobilenet_v2",
    "read_safetensors_metadata",
    "register_model",
    "resnet50",
    "same_padding",
    "save_safetensors",
    "tiny_classifier",
]
