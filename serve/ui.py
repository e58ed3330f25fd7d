"""The page of ``comcloak serve`` (``GET /``): one HTML file, one stylesheet and one script, read from the package
(``serve/page/``), no CDN, no framework and no build step, so it works offline. It uses only the public API
(``/v1/info``, ``POST /v1/jobs``, ``GET /v1/jobs/ID``, ``GET /v1/jobs/ID/result``), so whatever it shows a script can
get too. Every file is served with a strict Content-Security-Policy: scripts, styles and requests only from this
server, images also from ``blob:`` (the uploaded photo and its cloak) and ``data:`` (the empty favicon); no inline
script, no frames, no forms posted elsewhere. ``--no-ui`` leaves these routes out (404).

Example:
    >>> sorted(PAGE_FILES)
    ['/', '/page/page.css', '/page/page.js']
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

#: route -> (file under serve/page/, media type)
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/page/page.css": ("page.css", "text/css; charset=utf-8"),
              "/page/page.js": ("page.js", "text/javascript; charset=utf-8")}
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


@lru_cache(maxsize=len(PAGE_FILES))
def page_file(name: str) -> bytes:
    """The bytes of one of the page's files (package data of ``comcloak.serve``)."""
    return files("comcloak.serve").joinpath("page", name).read_bytes()


async def page(request: Request) -> Response:
    """One of the page's files, with the page's security headers."""
    from starlette.responses import Response

    name, media_type = PAGE_FILES[request.url.path]
    return Response(page_file(name), media_type=media_type, headers=PAGE_HEADERS)


def page_routes() -> list:
    """The page's Starlette routes (GET and HEAD)."""
    from starlette.routing import Route

    return [Route(path, page, methods=["GET", "HEAD"]) for path in PAGE_FILES]
