"""The job table of ``comcloak serve``'s job API (``POST /v1/jobs``, ``GET /v1/jobs/ID``, ``GET /v1/jobs/ID/result``):
a cloak that outlives one HTTP request (a ``strong`` cloak can take longer than a browser's or a proxy's timeout), so
a client submits, polls its status (queued with its position, running, done, failed) and fetches the result.

The table is bounded: at most ``max_jobs`` entries; a finished job is kept ``ttl_s`` seconds after it finished (then
evicted), and when the table is full the oldest finished job makes room; a table full of unfinished jobs refuses
new ones (503). Torch-free.

Example:
    >>> table = JobTable(max_jobs=2, ttl_s=60)
    >>> entry = table.add(item="photo", now=0.0)
    >>> table.get(entry.id, now=1.0) is entry
    True
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from comcloak.serve.problems import RETRY_AFTER_S, RequestError

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
JOB_ID_BYTES = 12  # 16 URL-safe characters: unguessable, so one client cannot read another's result


@dataclass(frozen=True)
class JobSettings:
    """``max_jobs`` entries at most (queued, running or finished); a finished one is kept ``ttl_s`` seconds."""

    max_jobs: int = 128
    ttl_s: float = 900.0

    def __post_init__(self) -> None:
        if self.max_jobs < 1 or not self.ttl_s > 0:
            raise ValueError(f"invalid job settings {self}")


@dataclass
class JobEntry:
    """One job: its batcher item, the task waiting for it, and once finished its answer or its problem."""

    id: str
    item: Any  # what was submitted to the batcher (a serve.service.Job); its identity gives the queue position
    created: float
    task: asyncio.Task | None = None
    finished: float | None = None
    answer: dict | None = None  # the service's answer (the image bytes under "data")
    error: RequestError | None = None  # why it failed: its problem+json answer

    @property
    def done(self) -> bool:
        return self.finished is not None


class JobTable:
    """The bounded table of jobs by id (see the module docstring); ``now`` is ``time.monotonic()`` seconds."""

    def __init__(self, max_jobs: int = JobSettings.max_jobs, ttl_s: float = JobSettings.ttl_s) -> None:
        self.max_jobs = max_jobs
        self.ttl_s = ttl_s
        self._jobs: OrderedDict[str, JobEntry] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, item: Any, now: float) -> JobEntry:
        """A new entry for ``item``; RequestError 503 when ``max_jobs`` unfinished jobs fill the table."""
        self.evict(now)
        if len(self._jobs) >= self.max_jobs:
            oldest_done = next((key for key, entry in self._jobs.items() if entry.done), None)
            if oldest_done is None:
                raise RequestError(503, f"{len(self._jobs)} jobs are queued or running (the limit is "
                                        f"{self.max_jobs}); try again shortly",
                                   {"Retry-After": str(RETRY_AFTER_S)})
            del self._jobs[oldest_done]
        entry = JobEntry(secrets.token_urlsafe(JOB_ID_BYTES), item, now)
        self._jobs[entry.id] = entry
        return entry

    def get(self, job_id: str, now: float) -> JobEntry:
        """The entry of ``job_id``; RequestError 404 when unknown or evicted."""
        self.evict(now)
        entry = self._jobs.get(job_id)
        if entry is None:
            raise RequestError(404, f"no job {job_id!r}: unknown, or finished more than {self.ttl_s:g} s ago")
        return entry

    def evict(self, now: float) -> None:
        """Drop the jobs that finished more than ``ttl_s`` seconds before ``now``."""
        expired = [key for key, entry in self._jobs.items()
                   if entry.finished is not None and now - entry.finished > self.ttl_s]
        for key in expired:
            del self._jobs[key]

    def unfinished(self) -> list[JobEntry]:
        """The jobs still queued or running."""
        return [entry for entry in self._jobs.values() if not entry.done]


def job_status(entry: JobEntry, batcher: Any, now: float, result: dict | None = None) -> dict[str, Any]:
    """``GET /v1/jobs/ID``'s JSON: ``status`` (queued, running, done, failed), ``position`` (queued: how many
    requests wait before it, 0 = next), ``seconds`` since it was submitted (or that it took), ``result`` (done: the
    verdict fields of ``POST /v1/cloak?response=json`` without the image; ``result_url`` has the image) or
    ``problem`` (failed: the problem+json it would have answered).

    Example: ``{"id": "...", "status": "queued", "position": 2, "seconds": 1.5, "url": "/v1/jobs/..."}``"""
    url = f"/v1/jobs/{entry.id}"
    status = {"id": entry.id, "url": url, "seconds": round((entry.finished or now) - entry.created, 3)}
    if entry.error is not None:
        return status | {"status": FAILED, "problem": {"status": entry.error.status, "detail": str(entry.error)}}
    if entry.answer is not None:
        return status | {"status": DONE, "result": result, "result_url": f"{url}/result"}
    if batcher.is_running(entry.item):
        return status | {"status": RUNNING}
    position = batcher.position(entry.item)
    return status | {"status": QUEUED, "position": batcher.depth if position is None else position}
