"""The face step of a ``Cloaker`` (``--protect faces|both``): the face cloak of :mod:`comcloak.attacks.faces` on a
photo, combined with the objects cloak in one perturbation, and the verdict of each face after the ``--check``
platform, as the surrogate (YuNet finds the face again, SFace no longer matches it) judges it. dlib is never run
here: it is the evaluation-only judge (``comcloak.evaluation.face_judge``).

``both`` is one perturbation: the face cloak first (on the original, with its per-face budget), then the classifier's
cloak starting from it (its goal the original's labels, so it sees and keeps the face change), the sum clipped so
that inside the face regions |cloak - original| <= the face preset's eps and outside them the classifier's eps
(:func:`clip_to_budget`, :meth:`FaceStep.finish`). The face preset's whole-photo PSNR floor holds for the face cloak
alone; the objects cloak adds its own change, so under ``both`` the whole photo's PSNR is lower than that floor.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from typing import Any

import numpy as np

from comcloak.attacks.faces.cloak import FACE_BACKENDS, FaceModels, FaceRecord, check_face, cloak_faces
from comcloak.attacks.faces.settings import FaceCloakConfig
from comcloak.codecs.tensors import to_tensor
from comcloak.engine.protection import NOT_FOUND, NOT_PROTECTED, PROTECTED, TOO_SMALL, face_report
from comcloak.models.faces import FaceDetection, detect_faces


def budget_levels(eps: float) -> int:
    """An eps on the [0, 1] scale as whole 8-bit levels (12/255 -> 12), as the composition rounds it."""
    return int(round(eps * 255))


def clip_to_budget(original: np.ndarray, cloaked: np.ndarray, regions: list[Any], face_eps: float,
                   eps: float) -> np.ndarray:
    """``cloaked`` (uint8 (H, W, 3)) clipped to ``original`` +- ``face_eps`` inside the face ``regions`` (squares
    with ``slices()``) and +- ``eps`` outside them (both on the [0, 1] scale).

    Example:
        >>> clip_to_budget(np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 9, np.uint8), [], 12 / 255, 4 / 255)[0, 0]
        array([4, 4, 4], dtype=uint8)
    """
    bound = np.full(original.shape[:2], budget_levels(eps), np.int16)
    for region in regions:
        bound[region.slices()] = budget_levels(face_eps)
    base = original.astype(np.int16)
    low, high = base - bound[..., None], base + bound[..., None]
    return np.clip(cloaked.astype(np.int16), low, high).clip(0, 255).astype(np.uint8)


def face_backend_for(backend: str) -> str:
    """The face loop (``attacks/faces/cloak.FACE_BACKENDS``) a Cloaker of ``backend`` runs: ``onnxruntime`` runs the
    exported face step, every other backend the torch loop (the face step has no TensorRT or CUDA-graph runner; the
    classifier's step still runs on the backend asked for)."""
    return backend if backend in FACE_BACKENDS else "torch"


class FaceStep:
    """The face cloak of one ``Cloaker``: its :class:`FaceCloakConfig` and the surrogate's face models, created on
    first use (only when faces are asked for) and reused for every photo; safe to share between threads.

    Example:
        >>> step = FaceStep(face_config("faces"))
        >>> cloaked, faces, detections = step.cloak(photo, photo, 0.0)
    """

    def __init__(self, config: FaceCloakConfig, models: FaceModels | None = None, backend: str = "torch",
                 cache_dir: str | os.PathLike | None = None, threads: int | None = None) -> None:
        self.config = config
        self.backend = face_backend_for(backend)
        self.cache_dir = cache_dir  # the exported face step graph's (the Cloaker's step-graph cache)
        self.threads = threads  # the ONNX Runtime face loop's intra-op threads (the Cloaker's)
        self._models = models
        self._lock = threading.Lock()

    @property
    def models(self) -> FaceModels:
        """The detector and recogniser (``config.face``'s), created once."""
        with self._lock:
            if self._models is None:
                self._models = FaceModels.create(self.config.face.detector, self.config.face.recogniser)
            return self._models

    def cloak(self, original: np.ndarray, base: np.ndarray, eps: float, check: bool = True,
              ) -> tuple[np.ndarray, tuple[FaceRecord, ...], tuple[FaceDetection, ...]]:
        """Cloak the faces of ``original`` (uint8 (H, W, 3)) on ``base`` (the objects cloak, or ``original``
        itself), within :func:`clip_to_budget` of ``original`` (``eps``: the objects cloak's, [0, 1]).

        Returns the cloak, one :class:`FaceRecord` per face found on ``original`` (its ``cosine``/``protected``
        against the clean ``original``, on the cloak as returned, no platform) and the detections (same order).
        ``check=False``: the records carry no verdict yet, for a caller that adds the objects cloak and then checks
        the final photo (:meth:`finish`), so no face is checked twice."""
        detections = tuple(detect_faces(self.models.detector, original))
        if not detections:  # a copy: the cloak is never the caller's own array
            return (base.copy() if base is original else base), (), ()
        result = cloak_faces(base, self.config, models=self.models, detections=detections, backend=self.backend,
                             cache_dir=self.cache_dir, check=check and base is original,  # else finish() checks
                             threads=self.threads)
        if base is original:  # the face cloak alone: its own check was against the original already
            return result.photo, result.faces, detections
        return self.finish(original, result.photo, result.faces, detections, eps)

    def finish(self, original: np.ndarray, cloaked: np.ndarray, faces: tuple[FaceRecord, ...],
               detections: tuple[FaceDetection, ...], eps: float,
               ) -> tuple[np.ndarray, tuple[FaceRecord, ...], tuple[FaceDetection, ...]]:
        """``cloaked`` (face and objects cloaks together) clipped by :func:`clip_to_budget` to ``original``, and the
        ``faces``' records checked again on it (``cosine``/``protected`` against the clean ``original``)."""
        regions = [face.region for face in faces if face.region is not None]
        cloaked = clip_to_budget(original, cloaked, regions, self.config.attack.eps, eps)
        clean = to_tensor(np.ascontiguousarray(original)[None])
        records = []
        for face, detection in zip(faces, detections):
            check = None if face.region is None else check_face(self.models, cloaked, clean, detection)
            records.append(replace(face, cosine=None if check is None else check.cosine,
                                   protected=check is not None and check.protected))
        return cloaked, tuple(records), detections

    def verdicts(self, original: np.ndarray, received: np.ndarray, faces: tuple[FaceRecord, ...],
                 detections: tuple[FaceDetection, ...]) -> list[dict[str, Any]]:
        """Each face's report after the platform: ``received`` is the cloak as the ``--check`` platform delivered
        it (possibly resized); the clean reference is ``original``. One dict per face: ``box`` [x, y, w, h],
        ``score``, ``cloaked``, ``steps``, ``cosine`` (the surrogate's, after the platform; None when not cloaked or
        not found), ``verdict`` (:data:`~comcloak.engine.protection.PROTECTED`, ``not protected``, ``not found``,
        ``too small, not cloaked``) and ``seconds``."""
        clean = to_tensor(np.ascontiguousarray(original)[None])
        reports = []
        for face, detection in zip(faces, detections):
            cosine = None
            if face.region is None:
                verdict = TOO_SMALL
            else:
                check = check_face(self.models, np.ascontiguousarray(received), clean, detection)
                cosine = None if check is None else check.cosine
                verdict = NOT_FOUND if check is None else PROTECTED if check.protected else NOT_PROTECTED
            reports.append(face_report(face, cosine, verdict))
        return reports
