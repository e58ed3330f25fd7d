"""The Prometheus metrics of ``comcloak serve`` (``GET /metrics``), each app in its own registry."""

from __future__ import annotations

from collections.abc import Callable

REQUEST_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    """The Prometheus metrics of one app, in their own registry; ``batcher_depth()`` is read at each scrape."""

    def __init__(self, batcher_depth: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("comcloak_requests_total", "HTTP requests to /v1/cloak by status code", ["code"],
                                registry=self.registry)
        self.request_seconds = Histogram("comcloak_request_seconds", "time from request to answer, seconds",
                                         registry=self.registry, buckets=REQUEST_SECONDS_BUCKETS)
        self.batch_size = Histogram("comcloak_batch_size", "photos per attack batch", registry=self.registry,
                                    buckets=BATCH_BUCKETS)
        self.queue_depth = Gauge("comcloak_queue_depth", "requests waiting for a batch", registry=self.registry)
        self.queue_depth.set_function(batcher_depth)
        self.images_per_second = Gauge("comcloak_images_per_second", "throughput of the last batch",
                                       registry=self.registry)

    def batch_done(self, size: int, seconds: float) -> None:
        """The batcher's ``on_batch``: the batch's size and the throughput it ran at."""
        self.batch_size.observe(size)
        self.images_per_second.set(size / seconds if seconds > 0 else 0.0)

    def answered(self, status: int, seconds: float) -> None:
        """One request to /v1/cloak answered with ``status`` after ``seconds``."""
        self.requests.labels(code=str(status)).inc()
        self.request_seconds.observe(seconds)

    def page(self) -> tuple[bytes, str]:
        """The metrics page and its content type (Prometheus's text format)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
