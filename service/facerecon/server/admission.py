"""Admission: a cap on requests in progress and on the memory they may take together.

Every request is charged, before any work, what it is estimated to take in memory
(`facerecon.server.cost`: decoded megapixels, views × size², encodings) against a memory
budget (`--memory-budget-mb`, or derived from the container's memory limit), and counts
against `--max-inflight`. Nothing queues without bound:

- a unary call either gets a slot now or RESOURCE_EXHAUSTED naming the limit it hit;
- a stream waits for a slot before it reads its next request, so HTTP/2 flow control pushes
  back on the client (the number of waiting streams is bounded by the transport's
  max_concurrent_streams). Waiting streams are served first come, first served.
- streams together may hold at most `stream_limit` of the slots (a quarter are kept for unary
  calls), so unary callers are never starved by streams waiting for slots; unary calls take
  any free slot, waiting streams or not.

A request whose cost alone is over the whole budget is refused at once, stream or not.

A slot is given back when its call is over *and* everything it started has let go of its
data: CPU jobs still running, and faces still in the batcher's queue. So abandoned work
(client gone, deadline passed) still counts against both limits until it really ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from facerecon.server.metrics import ServerMetrics

T = TypeVar("T")
MiB = 1 << 20


class Admission:
    def __init__(self, limit: int, budget: int, metrics: ServerMetrics):
        self.limit = limit
        self.metrics = metrics
        # slots streams may hold together: the rest is kept for unary calls
        self.stream_limit = limit - max(1, limit // 4) if limit >= 2 else limit
        self.count = 0  # slots held
        self.stream_count = 0  # of which by streams
        self.used = 0  # bytes charged
        self.budget = budget
        self._waiting: deque[tuple[int, asyncio.Future[Slot]]] = deque()

    @property
    def budget(self) -> int:
        return self._budget

    @budget.setter
    def budget(self, value: int) -> None:
        self._budget = max(1, int(value))
        self.metrics.memory_budget.set(self._budget)

    def over_budget(self, cost: int) -> str | None:
        """Why a request of `cost` bytes can never be admitted here (None: it can)."""
        if cost <= self.budget:
            return None
        self.metrics.rejected.labels("request_over_budget").inc()
        return (
            f"this request would take about {cost / MiB:.0f} MiB of memory, over this server's "
            f"memory budget of {self.budget / MiB:.0f} MiB (--memory-budget-mb): ask for fewer "
            "or smaller views, fewer mesh encodings, or send a smaller image"
        )

    def try_enter(self, cost: int) -> Slot | str:
        """A slot now, or why not (the caller answers RESOURCE_EXHAUSTED with it)."""
        if self.count >= self.limit:
            self.metrics.rejected.labels("inflight_limit").inc()
            return (
                f"server busy: {self.limit} requests in progress (--max-inflight); "
                "retry with backoff"
            )
        if self.used + cost > self.budget:
            self.metrics.rejected.labels("memory_budget").inc()
            return (
                f"server busy: {self.used / MiB:.0f} MiB of its {self.budget / MiB:.0f} MiB "
                f"memory budget (--memory-budget-mb) are taken by requests in progress, and "
                f"this one needs about {cost / MiB:.0f} MiB; retry with backoff"
            )
        return self._take(cost, stream=False)

    async def enter(self, cost: int) -> Slot:
        """Wait for a slot (streams only; `cost` must be within the budget), in turn."""
        if not self._waiting and self._fits_stream(cost):
            return self._take(cost, stream=True)
        granted: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        entry = (cost, granted)
        self._waiting.append(entry)
        try:
            return await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                granted.result().close()  # given a slot just as the caller went away
            elif entry in self._waiting:
                self._waiting.remove(entry)
            raise

    def _fits_stream(self, cost: int) -> bool:
        return (
            self.count < self.limit
            and self.stream_count < self.stream_limit
            and self.used + cost <= self.budget
        )

    def _take(self, cost: int, stream: bool) -> Slot:
        self.count += 1
        self.stream_count += stream
        self.used += cost
        self.metrics.inflight.inc()
        self.metrics.memory_reserved.set(self.used)
        return Slot(lambda: self._leave(cost, stream))

    def _leave(self, cost: int, stream: bool) -> None:
        self.count -= 1
        self.stream_count -= stream
        self.used -= cost
        self.metrics.inflight.dec()
        self.metrics.memory_reserved.set(self.used)
        self._wake()

    def _wake(self) -> None:
        """Hand freed capacity to the waiting streams, first come first served."""
        while self._waiting:
            cost, granted = self._waiting[0]
            if granted.done():  # its caller went away
                self._waiting.popleft()
                continue
            if not self._fits_stream(cost):
                return
            self._waiting.popleft()
            granted.set_result(self._take(cost, stream=True))


class Slot:
    """One admitted request. Runs its CPU jobs and frees itself once nothing holds its data."""

    def __init__(self, leave: Callable[[], None]):
        self._leave = leave
        self._holds = 0  # CPU jobs not yet finished + faces in the batcher's queue
        self._jobs: set[concurrent.futures.Future] = set()
        self._closed = False
        self._left = False

    def hold(self) -> Callable[[], None]:
        """Count one more user of the request's data; call the result (once) when done."""
        self._holds += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._holds -= 1
                self._maybe_leave()

        return release

    async def run(self, pool: concurrent.futures.Executor, fn: Callable[..., T], *args: Any) -> T:
        job = pool.submit(fn, *args)
        self._jobs.add(job)
        release = self.hold()
        loop = asyncio.get_running_loop()

        def done(_: concurrent.futures.Future) -> None:
            self._jobs.discard(job)
            try:
                loop.call_soon_threadsafe(release)
            except RuntimeError:  # the loop is closed: nobody is left to count
                pass

        job.add_done_callback(done)
        # Cancelling this await (client gone) cancels the job if it has not started yet.
        return await asyncio.wrap_future(job)

    def close(self) -> None:
        """The call is over: free the slot now, or once its running jobs finish and the
        batcher has let go of its faces."""
        if self._closed:
            return
        self._closed = True
        for job in list(self._jobs):
            job.cancel()  # not started yet: never will
        self._maybe_leave()

    def _maybe_leave(self) -> None:
        if self._closed and self._holds == 0 and not self._left:
            self._left = True
            self._leave()
