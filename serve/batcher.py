"""A dynamic batcher: requests whose work shares a key (the attack-view shape) are run together, up to ``max_batch``
or once the oldest has waited ``max_delay_s``, the way Triton's ``dynamic_batching`` and Ray Serve's ``@serve.batch``
do, with a bounded queue.

The batch function runs in one worker thread, so the asyncio event loop that accepts requests never blocks on an
attack; it returns one result per item, or an exception for an item that failed alone (a bad photo never fails the
others batched with it). Torch-free.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     batcher = DynamicBatcher(lambda items: [item * 2 for item in items], BatchSettings(max_delay_s=0.01))
    ...     async with batcher:
    ...         return await asyncio.gather(*(batcher.submit("key", n) for n in range(3)))
    >>> asyncio.run(demo())
    [0, 2, 4]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFullError(RuntimeError):
    """The batcher already holds ``max_queue`` waiting requests (HTTP 503 with Retry-After)."""


class RequestTimeoutError(TimeoutError):
    """A request waited and ran longer than ``timeout_s`` (HTTP 504)."""


@dataclass(frozen=True)
class BatchSettings:
    """``max_batch`` items per batch; a batch starts once full or when its oldest item has waited ``max_delay_s``;
    at most ``max_queue`` items wait; ``timeout_s`` bounds a request's wait plus run."""

    max_batch: int = 8
    max_delay_s: float = 0.05
    max_queue: int = 64
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_delay_s < 0 or self.timeout_s <= 0:
            raise ValueError(f"invalid batch settings {self}")


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Batch ``submit(key, item)`` calls by key and run them with ``run_batch(items) -> results`` (see the module
    docstring). ``on_batch(size, seconds)`` is told about every batch run (metrics). Use ``async with`` or
    :meth:`start` / :meth:`stop`."""

    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], settings: BatchSettings = BatchSettings(),
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.run_batch = run_batch
        self.settings = settings
        self.on_batch = on_batch
        self._groups: dict[Hashable, list[_Pending]] = {}
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._accepting = False
        self._running: list[Any] = []  # the items of the batch running now

    @property
    def depth(self) -> int:
        """Requests waiting for a batch (not counting the one running)."""
        return sum(len(group) for group in self._groups.values())

    def position(self, item: Any) -> int | None:
        """How many waiting requests were queued before ``item`` (0: it is next; batches run the oldest request's
        group first); None when ``item`` is not waiting (running, done, or not submitted yet)."""
        waiting = sorted((p for group in self._groups.values() for p in group if not p.future.cancelled()),
                         key=lambda pending: pending.enqueued)
        return next((index for index, pending in enumerate(waiting) if pending.item is item), None)

    def is_running(self, item: Any) -> bool:
        """Whether ``item`` is in the batch running now."""
        return any(running is item for running in self._running)

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="comcloak-batch")
        self._accepting = True
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop accepting, run everything already queued, then stop the worker."""
        self._accepting = False
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def __aenter__(self) -> DynamicBatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def submit(self, key: Hashable, item: Any) -> Any:
        """Queue ``item`` under ``key`` and wait for its result (or its exception)."""
        if not self._accepting or self._wakeup is None:
            raise QueueFullError("the server is shutting down")
        if self.depth >= self.settings.max_queue:
            raise QueueFullError(f"{self.depth} requests are already waiting (--max-queue {self.settings.max_queue})")
        pending = _Pending(item, asyncio.get_running_loop().create_future())
        self._groups.setdefault(key, []).append(pending)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), self.settings.timeout_s)
        except TimeoutError:
            pending.future.cancel()  # still queued: it will be dropped; already running: its result is discarded
            raise RequestTimeoutError(f"no result within {self.settings.timeout_s:g} s") from None

    def _next_batch(self) -> tuple[list[_Pending], float]:
        """The batch to run now (possibly empty) and how long to wait before looking again."""
        for key in list(self._groups):
            self._groups[key] = [p for p in self._groups[key] if not p.future.cancelled()]
            if not self._groups[key]:
                del self._groups[key]
        if not self._groups:
            return [], float("inf")
        now = time.monotonic()
        key, group = min(self._groups.items(), key=lambda entry: entry[1][0].enqueued)  # the oldest request first
        due = group[0].enqueued + self.settings.max_delay_s
        if len(group) >= self.settings.max_batch or now >= due or not self._accepting:
            batch, self._groups[key] = group[: self.settings.max_batch], group[self.settings.max_batch :]
            if not self._groups[key]:
                del self._groups[key]
            return batch, 0.0
        return [], due - now

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            batch, wait = self._next_batch()
            if batch:
                await self._run(loop, batch)
                continue
            if not self._accepting and not self._groups:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), None if wait == float("inf") else wait)
            except TimeoutError:
                pass

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        self._running = [p.item for p in batch]
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, self._running)
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function returned {len(results)} results for {len(batch)} items")
        except Exception as error:  # noqa: BLE001 - the whole batch failed: every waiting request gets the error
            results = [error] * len(batch)
        self._running = []
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - started)
        for pending, result in zip(batch, results):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
