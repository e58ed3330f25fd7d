"""What ``comcloak serve`` runs on: its settings (:class:`ServeSettings`, the command's options) and the models behind
the batcher (:class:`CloakService`: a bounded cache of ``Cloaker``s and the batch function, run in the batcher's
worker thread, never on the event loop)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from comcloak import defaults
from comcloak.codecs.photos import Photo
from comcloak.engine.protection import PROTECTION_KEYWORDS
from comcloak.errors import UserError, first_line
from comcloak.serve.batcher import BatchSettings
from comcloak.serve.jobs import JobSettings
from comcloak.serve.problems import RequestError
from comcloak.serve.request import CloakRequest
from comcloak.serve.server import READ_TIMEOUT_S

logger = logging.getLogger(__name__)

WARM_UP_SIDE = 64  # pixels of the warm-up photo's side


@dataclass(frozen=True)
class ServeSettings:
    """What ``comcloak serve`` is started with (its options)."""

    batch: BatchSettings = BatchSettings()
    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 50_000_000
    classifier: str | None = None  # the surrogates (default: each strength's own)
    backend: str = defaults.BACKEND
    device: str | None = None
    precision: str = defaults.PRECISION
    check: str = defaults.CHECK_CODEC
    cloakers: int = 2  # attack configurations whose models stay loaded at once
    read_timeout_s: float = READ_TIMEOUT_S  # for a request's headers, and again for its body
    token: str | None = field(default=None, repr=False)  # when set, /v1/* needs "Authorization: Bearer <token>"
    jobs: JobSettings = JobSettings()  # the job API's table: --max-jobs, --job-ttl
    ui: bool = True  # GET / serves the page (--no-ui: 404)


@dataclass
class Job:
    """One upload waiting in the batcher: its attack settings, photo, check codec and the format to write."""

    request: CloakRequest
    photo: Photo
    check: Any
    image_format: str


class CloakService:
    """The models (a bounded cache of ``Cloaker``s, one per attack configuration) and the batch function."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._cloakers: OrderedDict[CloakRequest, Any] = OrderedDict()

    def cloaker(self, request: CloakRequest):
        from comcloak.engine.cloaker import Cloaker

        if request in self._cloakers:
            self._cloakers.move_to_end(request)
            return self._cloakers[request]
        protection = {name: getattr(request.protection, name) for name in PROTECTION_KEYWORDS}
        cloaker = Cloaker(strength=request.strength, eps=request.eps, targeted=request.targeted or None,
                          target=request.target, classifier=self.settings.classifier, backend=self.settings.backend,
                          device=self.settings.device, precision=self.settings.precision, **protection)
        self._cloakers[request] = cloaker
        while len(self._cloakers) > self.settings.cloakers:
            self._cloakers.popitem(last=False)
        return cloaker

    @staticmethod
    def view_shape(request: CloakRequest, photo: Photo) -> tuple[int, int]:
        """The attack view's shape (the batching key), from the preset alone: no models are touched on the event
        loop; Cloakers are built and used only in the batch worker thread."""
        from comcloak.attacks.presets import preset_config
        from comcloak.engine.cloaker import attack_shape

        config = preset_config(request.strength, eps=request.eps, targeted=request.targeted or None,
                               target=request.target)
        return attack_shape(*photo.pixels.shape[:2], config.attack_size)

    def run_batch(self, jobs: list[Job]) -> list[dict | Exception]:
        """Cloak, encode and score one batch (one attack configuration and view shape); a result or an exception per
        job. Runs in the batcher's worker thread."""
        from comcloak.engine.pipeline import CloakFailure, cloak_batch

        try:
            cloaker = self.cloaker(jobs[0].request)
        except UserError as error:  # settings only the models can check (a target past the classifier's classes)
            return [RequestError(422, first_line(error)) for _ in jobs]
        started = time.perf_counter()
        results = cloak_batch(cloaker, [job.photo for job in jobs])
        seconds = (time.perf_counter() - started) / len(jobs)
        answers: list[dict | Exception] = []
        for job, result in zip(jobs, results):
            if isinstance(result, CloakFailure):  # 422: protect=faces on a photo without a face to cloak
                status = 500 if result.internal else 422 if result.faces is not None else 400
                answers.append(RequestError(status, result.error))
            else:
                answers.append(_answer(cloaker, job, result, seconds))
        return answers

    def warm_up(self) -> None:
        """Load the default strength's models and cloak one small photo (readiness waits for this)."""
        pixels = np.random.default_rng(0).integers(0, 256, (WARM_UP_SIDE, WARM_UP_SIDE, 3), dtype=np.uint8)
        self.cloaker(CloakRequest()).cloak_photos([pixels], batch_size=1)


def _answer(cloaker: Any, job: Job, result: Any, seconds: float) -> dict | Exception:
    """One cloaked upload encoded and scored: the answer's fields, or this photo's RequestError (never its batch's)."""
    from comcloak.engine.pipeline import PhotoRecord, encode_as_written, score_cloak, unchanged_reason

    try:
        data, written = encode_as_written(job.photo, result.cloaked, image_format=job.image_format)
        if (unchanged := unchanged_reason(job.photo.pixels, written)) is not None:
            return RequestError(400, unchanged)  # never a 200 carrying the input back
        record = PhotoRecord(source="upload", status="cloaked", clean_label=result.clean_label,
                             goal_label=result.goal_label)
        score_cloak(cloaker, record, job.photo.pixels, written, job.check, result)
    except Exception as error:  # noqa: BLE001 - this photo's failure, never its batch's
        logger.warning("encoding or scoring an upload failed", exc_info=True)
        return RequestError(500, f"cloaking failed ({type(error).__name__}: {error})")
    return {"data": data, "format": job.image_format, "clean_label": record.clean_check_label,
            "cloak_label": record.check_label, "clean_name": _label_name(record.clean_check_label),
            "cloak_name": _label_name(record.check_label), "protected": bool(record.success),
            "protected_on": record.protected_on,
            "psnr_db": record.psnr_db, "seconds": seconds, "check": job.check.spec,
            "protect": cloaker.protection.protect, "faces": record.faces}


def _label_name(label: int | None) -> str | None:
    """An ImageNet label's short name (the classifiers are ImageNet-1k's); None without a label."""
    from comcloak.models.labels import imagenet_class_name

    return None if label is None else imagenet_class_name(label)
