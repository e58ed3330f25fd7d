"""``comcloak serve``'s ASGI app (Starlette): cloak uploads behind an HTTP API with dynamic batching, health and
Prometheus metrics.

- ``POST /v1/cloak``: the body is the photo's bytes (or ``multipart/form-data`` with one file); query parameters
  ``strength``, ``eps``, ``check`` (platform profile or codec chain), ``format`` (``keep|jpeg|png|webp``),
  ``targeted``/``target``, ``protect`` (``faces|objects|both``, default both), ``face_preset``, ``face_steps``,
  ``response=json``. The answer is the cloaked photo with ``X-Comcloak-Clean-Label``, ``X-Comcloak-Protected``
  (after ``check``: the classifiers in the attacker's crop view, and every face), ``X-Comcloak-Faces`` (when faces
  are cloaked: ``2 protected of 2``, ``no faces``; each face's verdict in the JSON's ``faces``),
  ``X-Comcloak-PSNR`` and ``X-Comcloak-Seconds``; with ``response=json`` the same as JSON, the image base64-encoded.
  ``protect=faces`` on a photo without a face to cloak is a 422 (never a photo reported protected).
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

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from comcloak import __version__
from comcloak.attacks.faces.settings import FACE_PRESETS
from comcloak.attacks.presets import DEFAULT_STRENGTH, PRESETS
from comcloak.engine.outputs import written_format
from comcloak.engine.protection import DEFAULT_PROTECT, NO_FACES, PROTECT_CHOICES, PROTECTED
from comcloak.serve.batcher import DynamicBatcher, QueueFullError, RequestTimeoutError
from comcloak.serve.metrics import Metrics
from comcloak.serve.problems import (
    RETRY_AFTER_S,
    TITLES,
    RequestError,
    check_token,
    http_error,
    problem,
    refusal,
)
from comcloak.serve.request import CloakRequest, decode_upload, parse_request
from comcloak.serve.server import client_address
from comcloak.serve.service import CloakService, Job, ServeSettings

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["CloakApp", "CloakRequest", "CloakService", "RequestError", "ServeSettings", "create_app"]

logger = logging.getLogger(__name__)

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff",
                 "BMP": "image/bmp"}
DEFAULT_SETTINGS = ServeSettings()


class CloakApp:
    """``comcloak serve``'s app: the service (models and batch function), its batcher, the metrics and readiness,
    with one method per route; :meth:`starlette` is the ASGI app (see the module docstring).

    Example:
        >>> app = CloakApp(ServeSettings(classifier="tiny_classifier")).starlette()  # then uvicorn.run(app)
    """

    def __init__(self, settings: ServeSettings = DEFAULT_SETTINGS, service: CloakService | None = None) -> None:
        self.settings = settings
        self.service = service or CloakService(settings)
        self.batcher = DynamicBatcher(self.service.run_batch, settings.batch)
        self.metrics = Metrics(lambda: self.batcher.depth)
        self.batcher.on_batch = self.metrics.batch_done
        self.ready = False  # /v2/health/ready: the models are loaded and the warm-up batch has run

    def starlette(self):
        """The Starlette app serving this app's routes (``app.state`` holds the batcher, metrics and service)."""
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route

        routes = [Route("/v1/cloak", self.cloak, methods=["POST"]), Route("/v2/health/live", self.live),
                  Route("/v2/health/ready", self.health_ready), Route("/metrics", self.metrics_page),
                  Route("/v1/info", self.info)]
        app = Starlette(routes=routes, lifespan=self.lifespan, exception_handlers={HTTPException: http_error})
        app.state.batcher, app.state.metrics, app.state.service = self.batcher, self.metrics, self.service
        return app

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Start the batcher, warm the models up (off the event loop), then serve; on shutdown, finish the queue."""
        await self.batcher.start()
        await asyncio.get_running_loop().run_in_executor(None, self.service.warm_up)
        self.ready = True
        logger.info("comcloak serve is ready")
        try:
            yield
        finally:
            self.ready = False
            await self.batcher.stop()  # finish what is queued

    async def cloak(self, request: Request) -> Response:
        """``POST /v1/cloak``: every answer counted and timed; an error closes the connection."""
        started = time.perf_counter()
        try:
            response = await self._cloak(request)
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, answered as problem+json all the same
            logger.exception("a request to /v1/cloak failed")
            response = problem(500, TITLES[500], "the server failed on this request (logged)")
        if response.status_code >= 400:
            response.headers["Connection"] = "close"  # its body may be unread: stop the upload here
        self.metrics.answered(response.status_code, time.perf_counter() - started)
        return response

    async def _cloak(self, request: Request) -> Response:
        from comcloak.serve.body import CLIENT_CLOSED_REQUEST, read_upload

        settings = self.settings
        try:
            check_token(request.headers, settings.token)
            attack, check, choice, as_json = parse_request(dict(request.query_params), settings.check)
            body = await read_upload(request, settings.max_bytes, settings.read_timeout_s)
            photo = await asyncio.get_running_loop().run_in_executor(None, decode_upload, body, settings.max_pixels)
            job = Job(attack, photo, check, written_format(photo.format, choice, photo.alpha is not None))
            answer = await self.batcher.submit((attack, self.service.view_shape(attack, photo)), job)
        except RequestError as error:
            if error.status == CLIENT_CLOSED_REQUEST:
                logger.warning("%s: %s", client_address(request.client), error)
            return refusal(error)
        except QueueFullError as error:
            return problem(503, TITLES[503], str(error), {"Retry-After": str(RETRY_AFTER_S)})
        except RequestTimeoutError as error:
            return problem(504, TITLES[504], str(error))
        return _cloak_response(answer, as_json)

    async def live(self, request: Request) -> Response:
        """``GET /v2/health/live``: the process answers."""
        from starlette.responses import JSONResponse

        return JSONResponse({"live": True})

    async def health_ready(self, request: Request) -> Response:
        """``GET /v2/health/ready``: 200 once warmed up, 503 before and while stopping."""
        from starlette.responses import JSONResponse

        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    async def metrics_page(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus's text format."""
        from starlette.responses import Response

        page, media_type = self.metrics.page()
        return Response(page, media_type=media_type)

    async def info(self, request: Request) -> Response:
        """``GET /v1/info``: versions, the runtime settings and the presets (behind the token, when set)."""
        import torch
        from starlette.responses import JSONResponse

        settings = self.settings
        try:
            check_token(request.headers, settings.token)
        except RequestError as error:
            return refusal(error)
        return JSONResponse({
            "comcloak": __version__, "torch": torch.__version__, "backend": settings.backend,
            "device": settings.device, "precision": settings.precision, "check": settings.check,
            "classifier": settings.classifier, "batch": {"max_batch": settings.batch.max_batch,
                                                         "max_delay_s": settings.batch.max_delay_s,
                                                         "max_queue": settings.batch.max_queue,
                                                         "timeout_s": settings.batch.timeout_s},
            "presets": {name: preset.describe() for name, preset in PRESETS.items()},
            "default_strength": DEFAULT_STRENGTH, "protect": list(PROTECT_CHOICES), "default_protect": DEFAULT_PROTECT,
            "face_presets": {name: preset.summary for name, preset in FACE_PRESETS.items()},
        })


def _cloak_response(answer: dict, as_json: bool) -> Response:
    """The cloaked photo with its ``X-Comcloak-*`` headers, or with ``response=json`` the same as JSON."""
    from starlette.responses import JSONResponse, Response

    headers = {"X-Comcloak-Protected": "true" if answer["protected"] else "false",
               "X-Comcloak-PSNR": f"{answer['psnr_db']:.2f}", "X-Comcloak-Seconds": f"{answer['seconds']:.3f}",
               "X-Comcloak-Check": answer["check"]}
    if answer["clean_label"] is not None:  # protect=faces attacks no classifier
        headers["X-Comcloak-Clean-Label"] = str(answer["clean_label"])
    if answer["faces"] is not None:
        headers["X-Comcloak-Faces"] = faces_header(answer["faces"])
    media_type = CONTENT_TYPES[answer["format"]]
    if as_json:
        payload = {key: value for key, value in answer.items() if key != "data"}
        payload.update(image=base64.b64encode(answer["data"]).decode(), content_type=media_type)
        return JSONResponse(payload, headers=headers)
    return Response(answer["data"], media_type=media_type, headers=headers)


def faces_header(faces: list[dict]) -> str:
    """``X-Comcloak-Faces``: ``no faces``, ``2 protected of 2``, ``1 protected of 2 (1 not found)``."""
    if not faces:
        return NO_FACES
    verdicts = [face["verdict"] for face in faces]
    others = sorted({verdict for verdict in verdicts if verdict != PROTECTED})
    rest = f" ({', '.join(f'{verdicts.count(verdict)} {verdict}' for verdict in others)})" if others else ""
    return f"{verdicts.count(PROTECTED)} protected of {len(verdicts)}{rest}"


def create_app(settings: ServeSettings = DEFAULT_SETTINGS, service: CloakService | None = None):
    """The Starlette app of ``comcloak serve``: ``CloakApp(settings, service).starlette()``."""
    return CloakApp(settings, service).starlette()
