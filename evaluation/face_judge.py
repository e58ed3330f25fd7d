"""Face judges: who is in a photo, as a recogniser sees it, behind one small interface.

A judge finds the faces in a uint8 RGB photo with its own detector and alignment and returns one identity
descriptor per face; two descriptors are the same person when their distance is within the judge's threshold.

- :class:`DlibJudge` (role ``evaluation``): dlib's ResNet recogniser (128-d, L2 distance, same person at <= 0.6)
  with dlib's own HOG detector and 5-point landmarks, as the ``face_recognition`` package runs it (PyPI
  ``dlib-bin`` + ``face-recognition-models``, models CC0). It stands for the recogniser a cloak has not seen, as
  EfficientNet-Lite1/Lite2 do for classifiers: never a surrogate, never used to choose settings, never ported.
- :class:`SFaceJudge` (role ``surrogate``): our YuNet detector, the ArcFace-template alignment and our SFace
  (distance 1 - cosine, same person at cosine >= 0.363 as OpenCV), the models a face cloak attacks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from comcloak.models.faces.packaged import FaceModelMissingError, PackagedFile

DLIB_THRESHOLD = 0.6  # dlib's / face_recognition's tolerance on the L2 distance of 128-d descriptors
_PIP, _MODULE = "face-recognition-models", "face_recognition_models"
DLIB_RECOGNISER_FILE = PackagedFile(_PIP, _MODULE, "models/dlib_face_recognition_resnet_model_v1.dat")
DLIB_LANDMARKS_FILE = PackagedFile(_PIP, _MODULE, "models/shape_predictor_5_face_landmarks.dat")
JUDGE_ROLES = ("surrogate", "evaluation")  # as the classifier judges' roles (evaluation/platform.py)


@dataclass(frozen=True)
class JudgedFace:
    """One face as a judge sees it: ``box`` (x, y, width, height) in photo pixels and its ``descriptor``."""

    box: tuple[float, float, float, float]
    descriptor: np.ndarray


class FaceJudge(ABC):
    """What every face judge offers: ``name``, ``role`` (``surrogate`` or ``evaluation``), ``threshold`` on
    :meth:`distance`, :meth:`faces` and :meth:`same_person`."""

    name: str
    role: str
    threshold: float

    @abstractmethod
    def faces(self, photo: np.ndarray) -> list[JudgedFace]:
        """The faces the judge finds in a uint8 (H, W, 3) RGB photo, largest first."""

    @abstractmethod
    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """How far apart two descriptors are (smaller: more alike)."""

    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether the judge calls two descriptors the same person."""
        return self.distance(a, b) <= self.threshold


def _largest_first(faces: list[JudgedFace]) -> list[JudgedFace]:
    return sorted(faces, key=lambda face: face.box[2] * face.box[3], reverse=True)


class DlibJudge(FaceJudge):
    """dlib's face recogniser with its own pipeline (the evaluation-only judge).

    ``upsample``: how many times dlib's HOG detector upsamples the photo (face_recognition's default 1 finds faces
    down to about 40 px); ``jitters``: descriptor averaging over random jitters (1: none, face_recognition's
    default). Example::

        judge = DlibJudge()
        a, b = judge.faces(photo_a)[0], judge.faces(photo_b)[0]
        judge.same_person(a.descriptor, b.descriptor)
    """

    name = "dlib"
    role = "evaluation"
    threshold = DLIB_THRESHOLD

    def __init__(self, upsample: int = 1, jitters: int = 1) -> None:
        try:
            import dlib
        except ImportError as exc:
            message = "the dlib face judge needs the package dlib-bin (pip install dlib-bin)"
            raise FaceModelMissingError(message) from exc
        self.upsample, self.jitters = upsample, jitters
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(DLIB_LANDMARKS_FILE.path("the dlib face judge")))
        self._recogniser = dlib.face_recognition_model_v1(str(DLIB_RECOGNISER_FILE.path("the dlib face judge")))

    def faces(self, photo: np.ndarray) -> list[JudgedFace]:
        image = np.ascontiguousarray(photo, dtype=np.uint8)
        found = []
        for rect in self._detector(image, self.upsample):
            shape = self._landmarks(image, rect)
            descriptor = np.asarray(self._recogniser.compute_face_descriptor(image, shape, self.jitters))
            box = (float(rect.left()), float(rect.top()), float(rect.width()), float(rect.height()))
            found.append(JudgedFace(box, descriptor))
        return _largest_first(found)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


class SFaceJudge(FaceJudge):
    """Our YuNet + ArcFace alignment + SFace (a surrogate: the models a face cloak attacks).

    ``detector`` and ``recogniser`` are face-model names (:func:`comcloak.models.faces.create_face_model`), or
    modules; the threshold is the recogniser's own (``cosine_threshold``: same person at cosine >= it);
    ``settings``: the detector's :class:`~comcloak.models.faces.detect.DetectorSettings`.
    """

    role = "surrogate"

    def __init__(self, detector: Any = "yunet", recogniser: Any = "sface", settings: Any = None,
                 name: str = "sface") -> None:
        from comcloak.models.faces import DetectorSettings, create_face_model, recogniser_threshold

        self.detector = create_face_model(detector) if isinstance(detector, str) else detector
        self.recogniser = create_face_model(recogniser) if isinstance(recogniser, str) else recogniser
        self.settings = settings or DetectorSettings()
        self.name = name
        self.threshold = 1.0 - recogniser_threshold(self.recogniser)

    def faces(self, photo: np.ndarray) -> list[JudgedFace]:
        import torch

        from comcloak.codecs.tensors import to_tensor
        from comcloak.models.faces import align_faces, detect_faces

        detections = detect_faces(self.detector, photo, self.settings)
        if not detections:
            return []
        image = to_tensor(np.array(photo)[None])
        landmarks = torch.from_numpy(np.stack([face.landmarks for face in detections])).float()
        with torch.no_grad():
            crops = align_faces(image.expand(len(detections), -1, -1, -1), landmarks)
            # The recogniser saw 8-bit crops in training and in OpenCV: round as they are rounded there.
            embeddings = self.recogniser(torch.round(crops * 255) / 255).numpy()
        return _largest_first([JudgedFace(face.box, embedding) for face, embedding in zip(detections, embeddings)])

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(1.0 - a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

