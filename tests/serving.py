"""The real server of the ``comcloak serve`` tests (tests/serve/ and tests/engine/test_unchanged_cloak.py; tests/ is
on sys.path through its conftest.py, so any test file run alone imports it): uvicorn on a free loopback port, started
as ``comcloak serve`` starts it (its header deadline included), in a thread of the test process; loggers propagate
(no uvicorn log config), so ``caplog`` sees everything, tracebacks included."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import uvicorn
from PIL import Image

from comcloak.serve.app import CloakService, ServeSettings, create_app
from comcloak.serve.server import uvicorn_config

TINY = dict(classifier="tiny_classifier", check="none")
FAST = {"strength": "fast"}


def png_bytes(seed: int = 0, size: tuple[int, int] = (48, 64)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


class SlowService(CloakService):
    """The real service, each batch held ``seconds`` longer (to fill the queue and pass the timeout on purpose)."""

    seconds = 1.0

    def run_batch(self, jobs):
        time.sleep(self.seconds)
        return super().run_batch(jobs)


class ColdService(CloakService):
    """The real service without its warm-up (models load on the first batch): a server that starts at once."""

    def warm_up(self) -> None:
        pass


@contextmanager
def running_server(settings: ServeSettings, service: CloakService | None = None) -> Iterator[tuple[str, object]]:
    config = uvicorn_config(create_app(settings, service), settings.read_timeout_s, host="127.0.0.1", port=0,
                            log_level="warning", log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, server
    finally:
        server.should_exit = True
        thread.join(timeout=60)
