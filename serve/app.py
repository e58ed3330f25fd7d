"""``comcloak serve``'s ASGI app (Starlette): cloak uploads behind an HTTP API with dynamic batching, health and
Prometheus metrics.

- ``POST /v1/cloak``: the body is the photo's bytes (or ``multipart/form-data`` with one file); query parameters
  ``strength``, ``eps``, ``check`` (platform profile or codec chain), ``format`` (``keep|jpeg|png|webp``),
  ``targeted``/``target``, ``protect`` (``faces|objects|both``, default both), ``face_preset``, ``face_steps``,
  ``response=json``. The answer is the cloaked photo with ``X-Comcloak-Clean-Label`` and ``X-Comcloak-Cloak-Label``
  (the first surrogate's, after ``check``), ``X-Comcloak-Protected`` (after ``check``: the classifiers in the
  attacker's crop view, and every face), ``X-Comcloak-Faces`` (when faces
  are cloaked: ``2 protected of 2``, ``no faces``; each face's verdict in the JSON's ``faces``),
  ``X-Comcloak-PSNR`` and ``X-Comcloak-Seconds``; with ``response=json`` the same as JSON, the image base64-encoded.
  ``protect=faces`` on a photo without a face to cloak is a 422 (never a photo reported protected).
- Errors, every one, are ``application/problem+json`` with one line of detail and close the connection: 400 an
  undecodable or unsupported image or bad multipart, 401 no bearer token (when ``token`` is set: /v1/* only), 408 a
  body slower than ``read_timeout_s``, 413 too large (``max_bytes``, counted on every request shape; ``max_pixels``),
  422 a bad parameter, 500 this photo's cloak failed inside the attack or a bug (logged), 503 (``Retry-After``) the
  queue is full or the server is stopping, 504 past the timeout; each is counted in ``comcloak_requests_total``
  (499: the client went away, one log line). A bad photo fails alone, never the requests batched with it.
- ``POST /v1/jobs``: the same parameters and body as a job (a ``strong`` cloak can outlast a browser's or a proxy's
  timeout): 202 with ``Location: /v1/jobs/ID``; ``GET /v1/jobs/ID`` its status (queued with its position, running,
  done with the verdict's JSON, failed with its problem); ``GET /v1/jobs/ID/result`` the cloak with the headers of
  ``/v1/cloak`` (409 until done). The job table is bounded (:mod:`comcloak.serve.jobs`).
- ``GET /`` the page for people (:mod:`comcloak.serve.ui`; not with ``--no-ui``), ``GET /v2/health/live``,
  ``GET /v2/health/ready`` (200 once the models are loaded and a warm-up batch has run), ``GET /metrics``,
  ``GET /v1/info`` (also the platform profiles and output formats the page offers).

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
from comcloak.codecs.platforms import PROFILES
from comcloak.engine.outputs import OUTPUT_FORMATS, written_format
from comcloak.engine.protection import DEFAULT_PROTECT, NO_FACES, PROTECT_CHOICES, PROTECTED
from comcloak.serve.batcher import DynamicBatcher, QueueFullError, RequestTimeoutError
from comcloak.serve.jobs import JobEntry, JobTable, job_status
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
from comcloak.serve.ui import page_routes

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
        self.jobs = JobTable(settings.jobs.max_jobs, settings.jobs.ttl_s)
        self.ready = False  # /v2/health/ready: the models are loaded and the warm-up batch has run

    def starlette(self):
        """The Starlette app serving this app's routes (``app.state`` holds the batcher, metrics and service)."""
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route

        routes = [Route("/v1/cloak", self.cloak, methods=["POST"]), Route("/v2/health/live", self.live),
                  Route("/v2/health/ready", self.health_ready), Route("/metrics", self.metrics_page),
                  Route("/v1/info", self.info), Route("/v1/jobs", self.create_job, methods=["POST"]),
                  Route("/v1/jobs/{job_id}", self.job), Route("/v1/jobs/{job_id}/result", self.job_result)]
        if self.settings.ui:  # --no-ui: / answers 404
            routes += page_routes()
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
            await asyncio.gather(*(entry.task for entry in self.jobs.unfinished() if entry.task is not None))

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
        from comcloak.serve.body import CLIENT_CLOSED_REQUEST

        try:
            key, job, as_json = await self._accept(request)
            answer = await self.batcher.submit(key, job)
        except RequestError as error:
            if error.status == CLIENT_CLOSED_REQUEST:
                logger.warning("%s: %s", client_address(request.client), error)
            return refusal(error)
        except QueueFullError as error:
            return problem(503, TITLES[503], str(error), {"Retry-After": str(RETRY_AFTER_S)})
        except RequestTimeoutError as error:
            return problem(504, TITLES[504], str(error))
        return _cloak_response(answer, as_json)

    async def _accept(self, request: Request) -> tuple[tuple, Job, bool]:
        """An upload checked, read and decoded (``POST /v1/cloak`` and ``POST /v1/jobs``): its batching key, its
        batcher item and whether JSON was asked for; RequestError otherwise."""
        from comcloak.serve.body import read_upload

        settings = self.settings
        check_token(request.headers, settings.token)
        attack, check, choice, as_json = parse_request(dict(request.query_params), settings.check)
        body = await read_upload(request, settings.max_bytes, settings.read_timeout_s)
        photo = await asyncio.get_running_loop().run_in_executor(None, decode_upload, body, settings.max_pixels)
        job = Job(attack, photo, check, written_format(photo.format, choice, photo.alpha is not None))
        return (attack, self.service.view_shape(attack, photo)), job, as_json

    async def create_job(self, request: Request) -> Response:
        """``POST /v1/jobs``: the parameters and body of ``POST /v1/cloak``; 202 with ``Location: /v1/jobs/ID`` and
        the job's status (its queue position), or the refusal ``/v1/cloak`` would answer (never queued then)."""
        from starlette.responses import JSONResponse

        from comcloak.serve.body import CLIENT_CLOSED_REQUEST

        try:
            key, job, _ = await self._accept(request)
            entry = self.jobs.add(job, time.monotonic())
        except RequestError as error:
            if error.status == CLIENT_CLOSED_REQUEST:
                logger.warning("%s: %s", client_address(request.client), error)
            response = refusal(error)
            response.headers["Connection"] = "close"  # its body may be unread: stop the upload here
            return response
        entry.task = asyncio.create_task(self._run_job(entry, key))
        status = job_status(entry, self.batcher, time.monotonic())
        return JSONResponse(status, status_code=202, headers={"Location": status["url"]})

    async def _run_job(self, entry: JobEntry, key: tuple) -> None:
        """Wait for a job's batch; its answer or its error on ``entry``, counted in the metrics like a request."""
        started = time.perf_counter()
        try:
            entry.answer = await self.batcher.submit(key, entry.item)
        except RequestError as error:
            entry.error = error
        except QueueFullError as error:
            entry.error = RequestError(503, str(error), {"Retry-After": str(RETRY_AFTER_S)})
        except RequestTimeoutError as error:
            entry.error = RequestError(504, str(error))
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, the job fails with a 500 all the same
            logger.exception("a job failed")
            entry.error = RequestError(500, "the server failed on this job (logged)")
        entry.finished = time.monotonic()
        self.metrics.answered(200 if entry.error is None else entry.error.status, time.perf_counter() - started)

    async def job(self, request: Request) -> Response:
        """``GET /v1/jobs/ID``: the job's status JSON (:func:`~comcloak.serve.jobs.job_status`); 404 unknown."""
        from starlette.responses import JSONResponse

        try:
            entry = self._job_entry(request)
        except RequestError as error:
            return refusal(error)
        result = None if entry.answer is None else answer_fields(entry.answer)
        return JSONResponse(job_status(entry, self.batcher, time.monotonic(), result))

    async def job_result(self, request: Request) -> Response:
        """``GET /v1/jobs/ID/result``: the cloak with the headers of ``POST /v1/cloak``; a failed job's problem, 409
        while it is queued or running, 404 unknown."""
        try:
            entry = self._job_entry(request)
            if entry.error is not None:
                raise entry.error
            if entry.answer is None:
                raise RequestError(409, f"job {entry.id} has not finished: poll /v1/jobs/{entry.id} until it is done")
        except RequestError as error:
            return refusal(error)
        return _cloak_response(entry.answer, as_json=False)

    def _job_entry(self, request: Request) -> JobEntry:
        check_token(request.headers, self.settings.token)
        return self.jobs.get(request.path_params["job_id"], time.monotonic())

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
            "profiles": {name: profile.description for name, profile in PROFILES.items()},
            "formats": list(OUTPUT_FORMATS), "jobs": {"max_jobs": settings.jobs.max_jobs, "ttl_s": settings.jobs.ttl_s},
        })


def _cloak_response(answer: dict, as_json: bool) -> Response:
    """The cloaked photo with its ``X-Comcloak-*`` headers, or with ``response=json`` the same as JSON."""
    from starlette.responses import JSONResponse, Response

    headers = {"X-Comcloak-Protected": "true" if answer["protected"] else "false",
               "X-Comcloak-PSNR": f"{answer['psnr_db']:.2f}", "X-Comcloak-Seconds": f"{answer['seconds']:.3f}",
               "X-Comcloak-Check": answer["check"]}
    if answer["clean_label"] is not None:  # protect=faces attacks no classifier
        headers["X-Comcloak-Clean-Label"] = str(answer["clean_label"])
        headers["X-Comcloak-Cloak-Label"] = str(answer["cloak_label"])
    if answer["faces"] is not None:
        headers["X-Comcloak-Faces"] = faces_header(answer["faces"])
    media_type = CONTENT_TYPES[answer["format"]]
    if as_json:
        payload = answer_fields(answer) | {"image": base64.b64encode(answer["data"]).decode()}
        return JSONResponse(payload, headers=headers)
    return Response(answer["data"], media_type=media_type, headers=headers)


def answer_fields(answer: dict) -> dict:
    """The JSON fields of an answer (``response=json``, a finished job's ``result``): everything but the image
    bytes, with its ``content_type``."""
    return {key: value for key, value in answer.items() if key != "data"} | {
        "content_type": CONTENT_TYPES[answer["format"]]}


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
