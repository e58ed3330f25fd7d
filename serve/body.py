"""Reading an upload's body for ``comcloak serve``: every request shape (a raw body with or without Content-Length,
chunked, ``multipart/form-data``) is streamed and its bytes counted, so ``max_bytes`` bounds memory and no upload
ever reaches the disk; a body slower than ``read_timeout_s`` gets 408, a client that goes away 499.

Imported lazily (it needs Starlette, the ``serve`` extra).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from comcloak.serve.problems import RequestError

MAX_FORM_FIELDS = 16  # text fields beside the one file (none is used; a few are tolerated)
MAX_FIELD_BYTES = 64 * 1024  # one text field
CLIENT_CLOSED_REQUEST = 499  # nginx's code for a client that went away before its answer (metrics only)


async def read_upload(request: Request, max_bytes: int, read_timeout_s: float) -> bytes:
    """The photo's bytes: the body, or the one file of a ``multipart/form-data`` body. RequestError 400 (empty, not
    exactly one file, bad multipart), 408 (the body is slower than ``read_timeout_s``), 413 (over
    ``max_bytes``, stopped as soon as the count passes it), 499 (the client disconnected)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise RequestError(413, f"the body is {int(length)} bytes; the limit is {max_bytes}")
    async with aclosing(_counted_chunks(request, max_bytes, read_timeout_s)) as chunks:
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            body = await _the_one_file(request, chunks, max_bytes)
        else:
            body = b"".join([chunk async for chunk in chunks])
    if not body:
        raise RequestError(400, "the body is empty: send the photo's bytes")
    return body


async def _counted_chunks(request: Request, max_bytes: int, read_timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, whatever the framing; RequestError once the total passes ``max_bytes`` or
    the deadline passes, so nothing beyond the limit is ever read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + read_timeout_s
    size = 0
    while True:
        try:
            message = await asyncio.wait_for(request.receive(), max(deadline - loop.time(), 0.0))
        except TimeoutError:
            raise RequestError(408, f"the body did not arrive within {read_timeout_s:g} s") from None
        if message["type"] == "http.disconnect":
            raise RequestError(CLIENT_CLOSED_REQUEST, "the client disconnected before its upload arrived")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, f"the body is over the limit of {max_bytes} bytes")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _the_one_file(request: Request, chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    parser = MultiPartParser(request.headers, chunks, max_files=1, max_fields=MAX_FORM_FIELDS,
                             max_part_size=MAX_FIELD_BYTES)
    parser.spool_max_size = max_bytes  # the file never rolls over to disk: the count above bounds it
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise RequestError(400, f"bad multipart/form-data: {error.message}") from None
    try:
        files = [value for value in form.values() if hasattr(value, "read")]
        if len(files) != 1:
            raise RequestError(400, f"multipart/form-data needs exactly one file, got {len(files)}")
        return await files[0].read()
    finally:
        await form.close()
