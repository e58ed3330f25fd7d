"""How ``comcloak serve`` runs its app under uvicorn: uvicorn's HTTP protocol with a header deadline.

uvicorn closes idle keep-alive connections, but a client that sends part of its headers and then trickles (or
stops) holds its socket forever. Here the headers of each request must arrive whole within ``read_timeout_s`` of
the connection opening or of the previous answer, or the connection is closed with one log line; the body has its
own deadline in :mod:`comcloak.serve.body` (answered 408).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

READ_TIMEOUT_S = 60.0  # seconds for a request's headers, and again for its body


def client_address(client: tuple[str, int] | None) -> str:
    """``host:port`` of a peer for a log line (uvicorn's and Starlette's ``client``)."""
    return f"{client[0]}:{client[1]}" if client else "a client"


class _HeaderDeadline:
    """Mixed into uvicorn's HTTP protocol class (h11 or httptools: both keep the request in ``self.cycle``)."""

    read_timeout_s = READ_TIMEOUT_S
    _deadline: asyncio.TimerHandle | None = None
    _waiting_since: Any = None  # the cycle that was current when the deadline was armed

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def on_response_complete(self) -> None:
        self._arm()  # before uvicorn starts a pipelined request, whose headers have already arrived
        super().on_response_complete()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self._waiting_since = self.cycle  # type: ignore[attr-defined]
            self._deadline = self.loop.call_later(self.read_timeout_s, self._deadline_passed)  # type: ignore

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.cycle is not self._waiting_since or self.transport.is_closing():  # type: ignore[attr-defined]
            return  # a new request's headers arrived in time: the app has it (and the body's deadline)
        logger.warning("closed the connection of %s: no whole request headers within %g s",
                    client_address(self.client), self.read_timeout_s)  # type: ignore[attr-defined]
        self.transport.close()  # type: ignore[attr-defined]


def uvicorn_config(app: Any, read_timeout_s: float = READ_TIMEOUT_S, **options: Any):
    """uvicorn's ``Config`` for ``app`` (``options`` as for ``uvicorn.Config``: host, port, log_level...), its HTTP
    protocol given the header deadline."""
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    protocol = type("HeaderDeadlineProtocol", (_HeaderDeadline, AutoHTTPProtocol), {"read_timeout_s": read_timeout_s})
    return uvicorn.Config(app, http=protocol, **options)
