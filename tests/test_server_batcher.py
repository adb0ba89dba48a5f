"""DynamicBatcher on its own: batch closing rules, dropped callers, failures."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from facerecon.server.batcher import DynamicBatcher
from facerecon.server.metrics import ServerMetrics


class Recorder:
    """predict() that doubles its inputs and remembers the batches it saw."""

    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[list[int]] = []
        self.gate = gate

    def __call__(self, items):
        if self.gate is not None:
            assert self.gate.wait(10)
        self.batches.append(list(items))
        return [2 * i for i in items]


def run(scenario, predict, incoming=lambda: 1, max_batch_size=4, max_wait_s=0.2):
    async def main():
        batcher = DynamicBatcher(
            predict,
            max_batch_size,
            max_wait_s,
            capacity=64,
            metrics=ServerMetrics(),
            incoming=incoming,
        )
        batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_a_lone_request_does_not_wait_when_nothing_else_is_coming():
    async def scenario(batcher):
        start = time.perf_counter()
        assert await batcher.submit(21) == 42
        return time.perf_counter() - start

    assert run(scenario, Recorder(), incoming=lambda: 0, max_wait_s=5.0) < 1.0


def test_requests_close_together_share_a_batch_and_full_batches_close_early():
    recorder = Recorder()

    async def scenario(batcher):
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)  # well within max_wait: joins the open batch
        rest = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4, 5)]
        return await asyncio.gather(first, *rest)

    assert run(scenario, recorder, max_wait_s=1.0) == [2, 4, 6, 8, 10]
    assert recorder.batches == [[1, 2, 3, 4], [5]]  # the 4th made it full; 5 opened the next


def test_cancelled_callers_are_skipped():
    gate = threading.Event()
    recorder = Recorder(gate)

    async def scenario(batcher):
        busy = asyncio.create_task(batcher.submit(1))  # occupies the network thread
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit(2))
        kept = asyncio.create_task(batcher.submit(3))
        await asyncio.sleep(0.01)
        gone.cancel()
        gate.set()
        return await busy, await kept

    assert run(scenario, recorder, max_wait_s=0.0) == (2, 6)
    assert [2] not in recorder.batches and all(2 not in b for b in recorder.batches)


def test_a_failed_forward_pass_fails_its_batch_only():
    calls = []

    def predict(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return list(items)

    async def scenario(batcher):
        with pytest.raises(RuntimeError):
            await batcher.submit(1)
        return await batcher.submit(7)

    assert run(scenario, predict, incoming=lambda: 0) == 7
