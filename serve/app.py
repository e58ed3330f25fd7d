"""``comcloak serve``'s ASGI app (Starlette): cloak uploads behind an HTTP API with dynamic batching, health and
Prometheus metrics.

- ``POST /v1/cloak``: the body is the photo's bytes (or ``multipart/form-data`` with one file); query parameters
  ``strength``, ``eps``, ``check`` (platform profile or codec chain), ``format`` (``keep|jpeg|png|webp``),
  ``targeted``/``target``, ``response=json``. The answer is the cloaked photo with ``X-Comcloak-Clean-Label``,
  ``X-Comcloak-Protected`` (after ``check``, in the attacker's crop view), ``X-Comcloak-PSNR`` and
  ``X-Comcloak-Seconds``; with ``response=json`` the same as JSON, the image base64-encoded.
- Errors, every one, are ``application/problem+json`` with one line of detail and close the connection: 400 an
  undecodable or unsupported image or bad multipart, 401 no bearer token (when ``token`` is set: /v1/* only), 408 a
  body slower than ``read_timeout_s``, 413 too large (``max_bytes``, counted on every request shape; ``max_pixels``),
  422 a bad parameter, 500 this photo's cloak failed inside the attack or a bug (logged), 503 (``Retry-After``) the
  queue is full or the server is stopping, 504 past the timeout; each is counted in ``comcloak_requests_total``
  (499: the client went away, one log line). A bad photo fails alone, never the requests batched with it.
- ``GET /v2/health/live``, ``GET /v2/health/ready`` (200 once the models are loaded and a warm-up batch has run),
  ``GET /metrics``, ``GET /v1/info``.

Requests with the same attack settings and attack-view shape are batched (:mod:`comcloak.serve.batcher`); the
attack runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import numpy as np

from comcloak import __version__, defaults
from comcloak.attacks.presets import DEFAULT_STRENGTH, PRESETS, STRENGTHS
from comcloak.codecs import parse_codec
from comcloak.codecs.photos import Photo, PhotoError, load_photo, read_header
from comcloak.engine.outputs import OUTPUT_FORMATS, written_format
from comcloak.errors import UserError, first_line
from comcloak.serve.batcher import BatchSettings, DynamicBatcher, QueueFullError, RequestTimeoutError
from comcloak.serve.server import READ_TIMEOUT_S, client_address

logger = logging.getLogger(__name__)

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff",
                 "BMP": "image/bmp"}
PROBLEM_JSON = "application/problem+json"
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
RETRY_AFTER_S = 1
WARM_UP_SIDE = 64
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


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


@dataclass(frozen=True)
class CloakRequest:
    """The attack settings of one request: requests with equal settings and view shapes are batched together."""

    strength: str = DEFAULT_STRENGTH
    eps: float | None = None
    targeted: bool = False
    target: int | None = None


class RequestError(UserError):
    """A request the server refuses: ``status`` (400, 413, 422) and a one-line detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass
class _Job:
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
        cloaker = Cloaker(strength=request.strength, eps=request.eps, targeted=request.targeted or None,
                          target=request.target, classifier=self.settings.classifier, backend=self.settings.backend,
                          device=self.settings.device, precision=self.settings.precision)
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

    def run_batch(self, jobs: list[_Job]) -> list[dict | Exception]:
        """Cloak, encode and score one batch (one attack configuration and view shape); a result or an exception per
        job. Runs in the batcher's worker thread."""
        from comcloak.engine.pipeline import (
            CloakFailure,
            PhotoRecord,
            cloak_batch,
            encode_as_written,
            score_cloak,
            unchanged_reason,
        )

        try:
            cloaker = self.cloaker(jobs[0].request)
        except UserError as error:  # settings only the models can check (a target past the classifier's classes)
            return [RequestError(422, first_line(error)) for _ in jobs]
        started = time.perf_counter()
        results = cloak_batch(cloaker, [job.photo for job in jobs])
        seconds = (time.perf_counter() - started) / len(jobs)
        answers: list[dict | Exception] = []
        for job, result in zip(jobs, results):
            if isinstance(result, CloakFailure):
                answers.append(RequestError(500 if result.internal else 400, result.error))
                continue
            try:
                data, written = encode_as_written(job.photo, result.cloaked, image_format=job.image_format)
                if (unchanged := unchanged_reason(job.photo.pixels, written)) is not None:
                    answers.append(RequestError(400, unchanged))  # never a 200 carrying the input back
                    continue
                record = PhotoRecord(source="upload", status="cloaked", clean_label=result.clean_label,
                                     goal_label=result.goal_label)
                score_cloak(cloaker, record, job.photo.pixels, written, job.check)
            except Exception as error:  # noqa: BLE001 - this photo's failure, never its batch's
                logger.warning("encoding or scoring an upload failed", exc_info=True)
                answers.append(RequestError(500, f"cloaking failed ({type(error).__name__}: {error})"))
                continue
            answers.append({"data": data, "format": job.image_format, "clean_label": record.clean_check_label,
                            "protected": bool(record.success), "protected_on": record.protected_on,
                            "psnr_db": record.psnr_db, "seconds": seconds, "check": job.check.spec})
        return answers

    def warm_up(self) -> None:
        """Load the default strength's models and cloak one small photo (readiness waits for this)."""
        pixels = np.random.default_rng(0).integers(0, 256, (WARM_UP_SIDE, WARM_UP_SIDE, 3), dtype=np.uint8)
        self.cloaker(CloakRequest()).cloak_photos([pixels], batch_size=1)


class Metrics:
    """The Prometheus metrics of one app, in their own registry."""

    def __init__(self, batcher_depth: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("comcloak_requests_total", "HTTP requests to /v1/cloak by status code", ["code"],
                                registry=self.registry)
        self.request_seconds = Histogram("comcloak_request_seconds", "time from request to answer, seconds",
                                         registry=self.registry, buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64,
                                                                          128, 256))
        self.batch_size = Histogram("comcloak_batch_size", "photos per attack batch", registry=self.registry,
                                    buckets=BATCH_BUCKETS)
        self.queue_depth = Gauge("comcloak_queue_depth", "requests waiting for a batch", registry=self.registry)
        self.queue_depth.set_function(batcher_depth)
        self.images_per_second = Gauge("comcloak_images_per_second", "throughput of the last batch",
                                       registry=self.registry)

    def batch_done(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.images_per_second.set(size / seconds if seconds > 0 else 0.0)


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None):
    from starlette.responses import Response

    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_TITLES = {400: "Bad image", 401: "Unauthorized", 408: "Request timeout", 413: "Too large", 422: "Bad parameter",
           499: "Client closed request", 500: "Cloaking failed", 503: "Busy", 504: "Timeout"}


def check_token(headers: Any, token: str | None) -> None:
    """RequestError 401 unless ``token`` is None or the request carries ``Authorization: Bearer <token>``."""
    if token is None:
        return
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("latin-1"), token.encode()):
        raise RequestError(401, "this server needs a bearer token: send Authorization: Bearer <token>")


def parse_request(query: dict[str, str], default_check: str) -> tuple[CloakRequest, Any, str | None, bool]:
    """The attack settings, the check codec, the --format choice and whether JSON was asked for; RequestError 422."""
    known = {"strength", "eps", "check", "format", "targeted", "target", "response"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise RequestError(422, f"unknown parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    strength = query.get("strength", DEFAULT_STRENGTH)
    if strength not in STRENGTHS:
        raise RequestError(422, f"strength must be one of {', '.join(STRENGTHS)}, got {strength!r}")
    try:
        eps = float(query["eps"]) if "eps" in query else None
        target = int(query["target"]) if "target" in query else None
    except ValueError as error:
        raise RequestError(422, f"eps must be a number and target an integer ({error})") from None
    targeted_text = query.get("targeted", "false").lower()
    if targeted_text not in ("true", "false", "1", "0"):
        raise RequestError(422, f"targeted must be true or false, got {query['targeted']!r}")
    targeted = targeted_text in ("true", "1") or target is not None
    choice = query.get("format", "keep")
    if choice not in OUTPUT_FORMATS:
        raise RequestError(422, f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {choice!r}")
    response = query.get("response", "image")
    if response not in ("image", "json"):
        raise RequestError(422, f"response must be image or json, got {response!r}")
    try:
        check = parse_codec(query.get("check", default_check))
        request = CloakRequest(strength, eps, targeted, target)
        from comcloak.attacks.presets import preset_config

        preset_config(strength, eps=eps, targeted=targeted or None, target=target)  # validates eps and target
    except UserError as error:
        raise RequestError(422, str(error).splitlines()[0]) from None
    return request, check, choice, response == "json"


def create_app(settings: ServeSettings = ServeSettings(), service: CloakService | None = None):
    """The Starlette app of ``comcloak serve``."""
    import asyncio
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    service = service or CloakService(settings)
    state: dict[str, Any] = {"ready": False}
    batcher = DynamicBatcher(service.run_batch, settings.batch)
    metrics = Metrics(lambda: batcher.depth)
    batcher.on_batch = metrics.batch_done

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        await asyncio.get_running_loop().run_in_executor(None, service.warm_up)
        state["ready"] = True
        logger.info("comcloak serve is ready")
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()  # finish what is queued

    async def cloak(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await _cloak(request)
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, answered as problem+json all the same
            logger.exception("a request to /v1/cloak failed")
            response = problem(500, _TITLES[500], "the server failed on this request (logged)")
        if response.status_code >= 400:
            response.headers["Connection"] = "close"  # its body may be unread: stop the upload here
        metrics.requests.labels(code=str(response.status_code)).inc()
        metrics.request_seconds.observe(time.perf_counter() - started)
        return response

    async def _cloak(request: Request) -> Response:
        from comcloak.serve.body import CLIENT_CLOSED_REQUEST, read_upload

        try:
            check_token(request.headers, settings.token)
            attack, check, choice, as_json = parse_request(dict(request.query_params), settings.check)
            body = await read_upload(request, settings.max_bytes, settings.read_timeout_s)
            photo = await asyncio.get_running_loop().run_in_executor(None, _decode, body, settings.max_pixels)
            image_format = written_format(photo.format, choice, photo.alpha is not None)
            job = _Job(attack, photo, check, image_format)
            key = (attack, service.view_shape(attack, photo))
            answer = await batcher.submit(key, job)
        except RequestError as error:
            if error.status == CLIENT_CLOSED_REQUEST:
                logger.warning("%s: %s", client_address(request.client), error)
            return problem(error.status, _TITLES[error.status], str(error),
                           BEARER_CHALLENGE if error.status == 401 else None)
        except QueueFullError as error:
            return problem(503, _TITLES[503], str(error), {"Retry-After": str(RETRY_AFTER_S)})
        except RequestTimeoutError as error:
            return problem(504, _TITLES[504], str(error))
        headers = {"X-Comcloak-Clean-Label": str(answer["clean_label"]),
                   "X-Comcloak-Protected": "true" if answer["protected"] else "false",
                   "X-Comcloak-PSNR": f"{answer['psnr_db']:.2f}", "X-Comcloak-Seconds": f"{answer['seconds']:.3f}",
                   "X-Comcloak-Check": answer["check"]}
        media_type = CONTENT_TYPES[answer["format"]]
        if as_json:
            payload = {key: value for key, value in answer.items() if key != "data"}
            payload.update(image=base64.b64encode(answer["data"]).decode(), content_type=media_type)
            return JSONResponse(payload, headers=headers)
        return Response(answer["data"], media_type=media_type, headers=headers)

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    async def metrics_endpoint(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def info(request: Request) -> Response:
        import torch

        try:
            check_token(request.headers, settings.token)
        except RequestError as error:
            return problem(401, _TITLES[401], str(error), BEARER_CHALLENGE)
        return JSONResponse({
            "comcloak": __version__, "torch": torch.__version__, "backend": settings.backend,
            "device": settings.device, "precision": settings.precision, "check": settings.check,
            "classifier": settings.classifier, "batch": {"max_batch": settings.batch.max_batch,
                                                         "max_delay_s": settings.batch.max_delay_s,
                                                         "max_queue": settings.batch.max_queue,
                                                         "timeout_s": settings.batch.timeout_s},
            "presets": {name: preset.describe() for name, preset in PRESETS.items()},
            "default_strength": DEFAULT_STRENGTH,
        })

    routes = [Route("/v1/cloak", cloak, methods=["POST"]), Route("/v2/health/live", live),
              Route("/v2/health/ready", ready), Route("/metrics", metrics_endpoint), Route("/v1/info", info)]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.batcher, app.state.metrics, app.state.service = batcher, metrics, service
    return app


async def _http_error(request: Any, error: Any):
    """Starlette's own errors (404, 405) as problem+json too."""
    status = error.status_code
    return problem(status, HTTPStatus(status).phrase, str(error.detail), dict(error.headers or {}))


def _decode(body: bytes, max_pixels: int) -> Photo:
    """The upload as a photo; RequestError 400 (unreadable) or 413 (too many pixels, checked before decoding).
    Header and pixels are both read in a decoding worker (``read_header``, ``load_photo``): an upload's warnings,
    hangs or decoder crashes never reach the server process."""
    from PIL import Image

    from comcloak.codecs.decoding import BOMB_REASON
    from comcloak.engine.pipeline import too_small_reason

    try:
        header = read_header("upload", data=body)
    except PhotoError as error:
        if error.reason.startswith(BOMB_REASON):  # past Pillow's bomb guard (twice MAX_IMAGE_PIXELS): never decoded
            raise RequestError(413, f"the photo declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels; the "
                                    f"limit is {max_pixels}") from None
        raise RequestError(400, error.reason) from None
    width, height = header.width, header.height
    if width * height > max_pixels:
        raise RequestError(413, f"the photo is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    try:
        photo = load_photo("upload", data=body)
    except PhotoError as error:
        raise RequestError(400, error.reason) from None
    too_small = too_small_reason(photo.pixels.shape[1], photo.pixels.shape[0])  # the floor of comcloak cloak
    if too_small is not None:
        raise RequestError(400, too_small)
    return photo
