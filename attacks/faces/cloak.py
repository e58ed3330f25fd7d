"""The face cloak: every detected face above a minimum size, attacked in the one loop and composed back.

Per face (``cloak_faces``): the padded square region around it, resized to the working view, is the loop's ``x``;
the "classifier" is :class:`~comcloak.attacks.faces.view.IdentityView` (the region -> jittered alignment -> the
surrogate recogniser -> cosine to the clean embedding), the loss ``identity`` (away from the clean identity), the
draws the loop's own (``attacks/eot``: a platform's downscale and codec stand-in over the region, a sub-pixel shift),
seeded by the region's content. The working view's perturbation is resized back onto the region and mixed in with
a feathered mask (``attacks/faces/compose``). Afterwards the surrogate (detector, alignment, recogniser, on the
8-bit cloak as a judge sees it) checks each face: ``protected`` when it finds the face and no longer matches it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from comcloak import plugins
from comcloak.attacks.config import AttackConfigError
from comcloak.attacks.eot import content_seed
from comcloak.attacks.faces.budget import texture_map
from comcloak.attacks.faces.compose import Composer, Region, face_region, working_view
from comcloak.attacks.faces.settings import FaceCloakConfig, face_config
from comcloak.attacks.faces.view import IdentityView, rescale_points
from comcloak.attacks.loop import run_attack
from comcloak.attacks.through import make_through
from comcloak.codecs.tensors import to_tensor
from comcloak.models.faces import (
    FaceDetection,
    align_faces,
    create_face_model,
    create_recogniser,
    detect_faces,
    member_cosines,
    recogniser_thresholds,
)

JITTER_SEED_SALT = 0x5FACE  # the jitter's generator differs from the draws' (both seeded by the region's content)
SAME_FACE_IOU = 0.3  # a face found on the cloak is the same face when its box overlaps the clean one this much
# The loops a face can be attacked with: "torch" is run_attack (the reference); the others run the exported face
# step (comcloak.export.face_step), named lazily so that this layer never imports the engine's.
FACE_BACKENDS = {"torch": None, "onnxruntime": "comcloak.engine.backends.face_runner:FaceOnnxRuntimeLoop"}
# (view, x0, through, eps_map) -> adversarial: the loop bounded per pixel by eps_map (run_attack's) or flat (None)
FaceLoop = Callable[[nn.Module, torch.Tensor, nn.Module, 'torch.Tensor | None'], torch.Tensor]


@dataclass(frozen=True)
class FaceModels:
    """The surrogate's detector and recogniser (modules in eval mode; the recogniser may be a
    :class:`~comcloak.models.faces.FaceEnsemble`, whose cosine is its members' mean)."""

    detector: nn.Module
    recogniser: nn.Module

    @classmethod
    def create(cls, detector: str = "yunet", recogniser: str = "sface") -> FaceModels:
        """``recogniser``: one registered name, or several separated by commas (an ensemble)."""
        return cls(create_face_model(detector).eval(), create_recogniser(recogniser))


@dataclass(frozen=True)
class FaceCheck:
    """What the surrogate says of one face on a cloak: ``cosine``, the recogniser's cosine to the clean face (with
    an ensemble, that of the member nearest to matching: the largest cosine minus its own threshold), and
    ``protected``: every member's cosine is below its own threshold."""

    cosine: float
    protected: bool

    @classmethod
    def of(cls, cosines: Sequence[float], thresholds: Sequence[float]) -> FaceCheck:
        """From each member's cosine and threshold. Example: ``FaceCheck.of([0.1, 0.5], [0.363, 0.45])`` is
        ``FaceCheck(0.5, False)``."""
        margins = [cosine - threshold for cosine, threshold in zip(cosines, thresholds)]
        nearest = max(range(len(margins)), key=margins.__getitem__)
        return cls(float(cosines[nearest]), all(margin < 0 for margin in margins))


@dataclass(frozen=True)
class FaceRecord:
    """One detected face: ``box`` (x, y, w, h) and ``score`` from the detector, the ``region`` cloaked (None:
    smaller than ``min_face``, not cloaked), ``steps`` run, ``cosine`` of the surrogate's embedding of the cloak
    to the clean one (None: not cloaked, or the detector no longer finds the face; with an ensemble, the cosine of
    the member nearest to matching, :class:`FaceCheck`), ``protected`` (the surrogate finds the face and no longer
    matches it: every recogniser's cosine below its own threshold) and ``seconds`` spent on it."""

    box: tuple[float, float, float, float]
    score: float
    region: Region | None
    steps: int
    cosine: float | None
    protected: bool
    seconds: float


@dataclass(frozen=True)
class FaceCloakResult:
    """The cloaked photo (uint8 (H, W, 3)) and one record per detected face (none: no faces were found)."""

    photo: np.ndarray
    faces: tuple[FaceRecord, ...]

    @property
    def status(self) -> str:
        """``no faces``, ``protected`` (every face), ``partly protected`` or ``not protected``."""
        if not self.faces:
            return "no faces"
        protected = sum(face.protected for face in self.faces)
        return "protected" if protected == len(self.faces) else "partly protected" if protected else "not protected"


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter = max(0.0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return inter / max(aw * ah + bw * bh - inter, 1e-12)


def surrogate_embedding(models: FaceModels, image: torch.Tensor, landmarks: np.ndarray) -> torch.Tensor:
    """The recogniser's unit embedding (E,) of the face at ``landmarks`` (5, 2) in ``image`` (1, 3, H, W), on the
    8-bit crop as a judge computes it (``evaluation/face_judge.SFaceJudge``)."""
    with torch.no_grad():
        crop = align_faces(image, torch.from_numpy(np.asarray(landmarks, np.float32))[None])
        return nn.functional.normalize(models.recogniser(torch.round(crop * 255) / 255), dim=-1)[0]


def face_loop(backend: str, models: FaceModels, config: FaceCloakConfig,
              cache_dir: str | os.PathLike | None = None, threads: int | None = None) -> FaceLoop:
    """The loop of ``backend`` (:data:`FACE_BACKENDS`): ``torch``, the one loop (``run_attack``), or
    ``onnxruntime``, the exported face step run by ONNX Runtime with the same draws (the same cloak up to float32
    rounding), its graph kept in ``cache_dir`` (default ``$XDG_CACHE_HOME/comcloak``; the torch loop keeps none),
    on ``threads`` intra-op threads (default one per core; the torch loop uses torch's own setting)."""
    if backend not in FACE_BACKENDS:
        raise AttackConfigError(f"unknown face backend {backend!r}; available: {', '.join(FACE_BACKENDS)}")
    if FACE_BACKENDS[backend] is None:
        labels = torch.zeros(1, dtype=torch.long)
        return lambda view, x0, through, eps_map: run_attack(view, x0, labels, config.attack, through,
                                                             eps_map=eps_map)
    return plugins.import_reference(FACE_BACKENDS[backend])(models.recogniser, config, cache_dir=cache_dir,
                                                            threads=threads)


def attack_face(models: FaceModels, image: torch.Tensor, face: FaceDetection, region: Region,
                config: FaceCloakConfig, loop: FaceLoop | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The perturbation (1, 3, S, S) of one face's working view, from the one loop (``loop``: :func:`face_loop`'s;
    default the torch loop), and the per-pixel budget factors (1, 1, S, S) it was bounded by."""
    size = config.face.work_size
    x0 = working_view(image, region, size)
    marks = rescale_points(torch.from_numpy(np.asarray(face.landmarks, np.float64))
                           - torch.tensor([region.left, region.top], dtype=torch.float64), region.side, size)
    with torch.no_grad():
        clean = IdentityView(models.recogniser, marks, size, torch.zeros(1, 1), config.face).embed(x0)
    view = IdentityView(models.recogniser, marks, size, clean, config.face,
                        seed=content_seed(x0[0], config.attack.seed) ^ JITTER_SEED_SALT)
    through = make_through(config.attack.through, config.attack.seed)
    factors = texture_map(x0, config.face)
    adversarial = (loop or face_loop("torch", models, config))(view, x0, through, factors)
    return adversarial - x0, factors


def check_face(models: FaceModels, cloaked: np.ndarray, clean_image: torch.Tensor,
               face: FaceDetection) -> FaceCheck | None:
    """The surrogate's verdict on the face on the cloak against the clean photo (None: not found on the cloak).

    ``cloaked`` (uint8 (h, w, 3)) may be the cloak as a platform delivered it, resized (``--check facebook`` on a
    large photo): its faces are matched to ``face`` (found on ``clean_image`` (1, 3, H, W)) in the clean photo's
    coordinates, and each embedding is taken from its own photo, as an attacker would."""
    scale = np.array([clean_image.shape[-1] / cloaked.shape[1], clean_image.shape[-2] / cloaked.shape[0]] * 2)
    found = [(_iou(np.asarray(other.box) * scale, face.box), other) for other in detect_faces(models.detector, cloaked)]
    found = [(overlap, other) for overlap, other in found if overlap >= SAME_FACE_IOU]
    if not found:
        return None
    best = max(found, key=lambda pair: pair[0])[1]
    cloak_embedding = surrogate_embedding(models, to_tensor(cloaked[None]), best.landmarks)
    clean_embedding = surrogate_embedding(models, clean_image, face.landmarks)
    return FaceCheck.of(member_cosines(models.recogniser, cloak_embedding, clean_embedding),
                        recogniser_thresholds(models.recogniser))


def cloak_faces(photo: np.ndarray, config: FaceCloakConfig | None = None, *, models: FaceModels | None = None,
                detections: Sequence[FaceDetection] | None = None, backend: str = "torch",
                cache_dir: str | os.PathLike | None = None, check: bool = True,
                threads: int | None = None) -> FaceCloakResult:
    """Cloak every face of ``photo`` (uint8 (H, W, 3) RGB) whose box is at least ``config.face.min_face`` pixels.

    Args:
        photo: the photo.
        config: the face cloak (:func:`face_config`; default: the ``faces`` preset).
        models: the surrogate's detector and recogniser (default: ``config.face``'s, created here).
        detections: the faces to cloak (default: the detector's).
        backend: the loop (:data:`FACE_BACKENDS`): ``torch`` (the reference) or ``onnxruntime`` (the exported face
            step; the same draws, the same cloak up to float32 rounding; its graph is exported on first use).
        cache_dir: where the exported step graph is kept (default ``$XDG_CACHE_HOME/comcloak``).
        check: check each face on the cloak (the surrogate's detector and recogniser); False: the records carry no
            verdict (``cosine`` None, ``protected`` False), for a caller that changes the cloak further and checks
            the final one itself (``engine/faces.FaceStep.finish``).
        threads: the ``onnxruntime`` loop's intra-op threads (default one per core).

    Returns:
        :class:`FaceCloakResult`; a photo without faces comes back unchanged with status ``no faces``.

    Example:
        >>> result = cloak_faces(photo, face_config("faces"))
        >>> result.status, [face.protected for face in result.faces]
    """
    config = config or face_config()
    models = models or FaceModels.create(config.face.detector, config.face.recogniser)
    loop = face_loop(backend, models, config, cache_dir, threads)
    faces = list(detect_faces(models.detector, photo) if detections is None else detections)
    image = to_tensor(np.ascontiguousarray(photo)[None])
    height, width = photo.shape[:2]
    composer = Composer(image, config.face)
    attacked: list[tuple[FaceDetection, Region | None, float]] = []
    for face in faces:
        started = time.perf_counter()
        region = None
        if min(face.box[2], face.box[3]) >= config.face.min_face:
            region = face_region(face.box, height, width, config.face.padding)
            composer.add(region, *attack_face(models, image, face, region, config, loop))
        attacked.append((face, region, time.perf_counter() - started))
    cloaked = composer.compose(photo, config.attack.eps) if any(region for _, region, _ in attacked) else photo.copy()
    records = []
    for face, region, seconds in attacked:
        verdict = None if region is None or not check else check_face(models, cloaked, image, face)
        cosine, protected = (None, False) if verdict is None else (verdict.cosine, verdict.protected)
        records.append(FaceRecord(tuple(face.box), float(face.score), region, config.attack.steps if region else 0,
                                  cosine, protected, seconds))
    return FaceCloakResult(cloaked, tuple(records))
