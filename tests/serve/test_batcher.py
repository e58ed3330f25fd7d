"""The dynamic batcher (issue 15's core): batching by key under concurrency, the delay bound, the bounded queue, a
bad item failing alone, timeouts and draining on stop. Real threads and a real event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from comcloak.serve.batcher import BatchSettings, DynamicBatcher, QueueFullError, RequestTimeoutError


class Recorder:
    """A batch function that records its batches, optionally slowly, and fails on items that are negative."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.seconds = seconds
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[object]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        time.sleep(self.seconds)
        return [ValueError(f"bad item {item}") if item < 0 else item * 10 for item in items]


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_are_batched_by_key_and_the_loop_never_runs_the_batch() -> None:
    recorder = Recorder(seconds=0.05)
    sizes: list[int] = []

    async def scenario():
        async with DynamicBatcher(recorder, BatchSettings(max_batch=4, max_delay_s=0.05),
                                  on_batch=lambda size, _: sizes.append(size)) as batcher:
            jobs = [batcher.submit(("a" if n % 2 else "b"), n) for n in range(8)]
            return await asyncio.gather(*jobs)

    assert run(scenario()) == [n * 10 for n in range(8)]
    assert sorted(sizes) == [4, 4] and all(len({n % 2 for n in batch}) == 1 for batch in recorder.batches)
    assert recorder.threads and all(name.startswith("comcloak-batch") for name in recorder.threads)


def test_a_lone_request_waits_at_most_the_delay() -> None:
    async def scenario():
        async with DynamicBatcher(Recorder(), BatchSettings(max_batch=8, max_delay_s=0.1)) as batcher:
            started = time.monotonic()
            result = await batcher.submit("k", 3)
            return result, time.monotonic() - started

    result, seconds = run(scenario())
    assert result == 30 and 0.09 <= seconds < 1.0


def test_a_bad_item_fails_alone() -> None:
    async def scenario():
        async with DynamicBatcher(Recorder(), BatchSettings(max_batch=3, max_delay_s=0.05)) as batcher:
            return await asyncio.gather(*(batcher.submit("k", n) for n in (1, -1, 2)), return_exceptions=True)

    good, bad, other = run(scenario())
    assert (good, other) == (10, 20) and isinstance(bad, ValueError) and "bad item -1" in str(bad)


def test_the_queue_is_bounded() -> None:
    async def scenario():
        async with DynamicBatcher(Recorder(seconds=0.2), BatchSettings(max_batch=1, max_delay_s=0, max_queue=2)) as b:
            first = asyncio.create_task(b.submit("k", 1))
            await asyncio.sleep(0.05)  # the first is running; the next two wait; a fourth is refused
            waiting = [asyncio.create_task(b.submit("k", n)) for n in (2, 3)]
            await asyncio.sleep(0)
            with pytest.raises(QueueFullError, match="already waiting"):
                await b.submit("k", 4)
            return await asyncio.gather(first, *waiting)

    assert run(scenario()) == [10, 20, 30]


def test_a_request_past_its_timeout_gets_a_timeout_and_the_rest_go_on() -> None:
    def slow_for_one(items: list[int]) -> list[int]:
        time.sleep(0.4 if 1 in items else 0.0)
        return [item * 10 for item in items]

    async def scenario():
        settings = BatchSettings(max_batch=1, max_delay_s=0, timeout_s=0.2)
        async with DynamicBatcher(slow_for_one, settings) as batcher:
            with pytest.raises(RequestTimeoutError, match="no result within 0.2 s"):
                await batcher.submit("k", 1)
            await asyncio.sleep(0.3)  # the slow batch finishes; its result is dropped
            return await batcher.submit("k", 2)

    assert run(scenario()) == 20


def test_stop_drains_what_is_queued_and_then_refuses() -> None:
    recorder = Recorder(seconds=0.02)

    async def scenario():
        batcher = DynamicBatcher(recorder, BatchSettings(max_batch=2, max_delay_s=10))
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit("k", n)) for n in range(3)]
        await asyncio.sleep(0.01)
        await batcher.stop()  # the delay is 10 s, but stopping runs the queued requests at once
        with pytest.raises(QueueFullError, match="shutting down"):
            await batcher.submit("k", 9)
        return await asyncio.gather(*tasks)

    assert run(scenario()) == [0, 10, 20] and sum(map(len, recorder.batches)) == 3
