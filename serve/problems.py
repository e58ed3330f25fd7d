"""The errors of ``comcloak serve``: every one an ``application/problem+json`` answer (RFC 9457) with one line of
detail. Torch-free; Starlette is imported when an answer is built (the ``serve`` extra)."""

from __future__ import annotations

import hmac
import json
from http import HTTPStatus
from typing import Any

from comcloak.errors import UserError

PROBLEM_JSON = "application/problem+json"
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
RETRY_AFTER_S = 1  # the Retry-After of a 503 (the queue is full or the server is stopping)
TITLES = {400: "Bad image", 401: "Unauthorized", 404: "Not found", 408: "Request timeout", 409: "Not finished",
          413: "Too large", 422: "Bad parameter", 499: "Client closed request", 500: "Cloaking failed", 503: "Busy",
          504: "Timeout"}


class RequestError(UserError):
    """A request the server refuses: ``status`` (400, 413, 422) and a one-line detail (``headers``: Retry-After)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.headers = headers


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None):
    """A problem+json response, e.g. ``problem(422, TITLES[422], "eps must be a number")``."""
    from starlette.responses import Response

    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def refusal(error: RequestError):
    """The problem+json answer of a refused request (401 with its bearer challenge)."""
    headers = BEARER_CHALLENGE if error.status == 401 else error.headers
    return problem(error.status, TITLES[error.status], str(error), headers)


async def http_error(request: Any, error: Any):
    """Starlette's own errors (404, 405) as problem+json too."""
    status = error.status_code
    return problem(status, HTTPStatus(status).phrase, str(error.detail), dict(error.headers or {}))


def check_token(headers: Any, token: str | None) -> None:
    """RequestError 401 unless ``token`` is None or the request carries ``Authorization: Bearer <token>``."""
    if token is None:
        return
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("latin-1"), token.encode()):
        raise RequestError(401, "this server needs a bearer token: send Authorization: Bearer <token>")
