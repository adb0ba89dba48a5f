"""The cap on requests in progress: beyond it unary calls are refused at once.

Nothing queues without bound: a unary call either gets a slot now or RESOURCE_EXHAUSTED;
a stream waits for a slot before it reads its next request, so HTTP/2 flow control pushes
back on the client (the number of waiting streams is bounded by the transport's
max_concurrent_streams). A slot is given back when its call is over *and* the CPU job it
started has stopped, so abandoned work still counts against the cap until it ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from facerecon.server.metrics import ServerMetrics

T = TypeVar("T")


class Admission:
    def __init__(self, limit: int, metrics: ServerMetrics):
        self.limit = limit
        self.metrics = metrics
        self._slots = asyncio.Semaphore(limit)

    async def try_enter(self) -> Slot | None:
        """A slot if one is free now, else None (the caller answers RESOURCE_EXHAUSTED)."""
        if self._slots.locked():
            self.metrics.rejected.labels("inflight_limit").inc()
            return None
        await self._slots.acquire()  # free: returns without suspending
        return self._entered()

    async def enter(self) -> Slot:
        """Wait for a slot (streams only)."""
        await self._slots.acquire()
        return self._entered()

    def _entered(self) -> Slot:
        self.metrics.inflight.inc()
        return Slot(self._leave)

    def _leave(self) -> None:
        self._slots.release()
        self.metrics.inflight.dec()


class Slot:
    """One admitted request. Runs its CPU jobs and frees itself once nothing is running."""

    def __init__(self, leave: Callable[[], None]):
        self._leave = leave
        self._job: concurrent.futures.Future | None = None
        self._closed = False

    async def run(self, pool: concurrent.futures.Executor, fn: Callable[..., T], *args: Any) -> T:
        self._job = pool.submit(fn, *args)
        # Cancelling this await (client gone) cancels the job if it has not started yet.
        return await asyncio.wrap_future(self._job)

    def close(self) -> None:
        """The call is over: free the slot now, or when its running job finishes."""
        if self._closed:
            return
        self._closed = True
        job = self._job
        if job is None or job.done() or job.cancel():
            self._leave()
            return
        loop = asyncio.get_running_loop()
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._leave))
