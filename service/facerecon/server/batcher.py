"""Dynamic batching: requests arriving close together share one forward pass.

The first waiting item opens a batch; the batch closes when it is full, or `max_wait_s` after
it opened, or as soon as no other request is on its way (`incoming()` is 0: nobody is being
decoded and cropped), whichever comes first. Items already queued are taken at once, so a
backlog always forms full batches, and a lone request on an idle server never waits.

Batches run one at a time in a dedicated thread: the network is the bottleneck and one
forward pass at a time keeps its latency predictable while the event loop and the CPU pool
prepare the next batch. Items whose caller has gone (cancelled, deadline passed) are dropped
before the forward pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from facerecon.server.metrics import ServerMetrics

In = TypeVar("In")
Out = TypeVar("Out")
log = logging.getLogger(__name__)


class DynamicBatcher(Generic[In, Out]):
    def __init__(
        self,
        predict: Callable[[Sequence[In]], Sequence[Out]],
        max_batch_size: int,
        max_wait_s: float,
        capacity: int,
        metrics: ServerMetrics,
        incoming: Callable[[], int] = lambda: 1,
    ):
        self.predict = predict
        self.incoming = incoming
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        # Admission control bounds the items in flight, so this never fills up.
        self._queue: asyncio.Queue[tuple[In, asyncio.Future[Out]]] = asyncio.Queue(capacity)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="facerecon-network")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._thread.shutdown(wait=True)

    async def submit(self, item: In) -> Out:
        """The prediction for `item`, computed in some batch."""
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        self.metrics.queue_depth.set(self._queue.qsize())
        return await future  # cancelling this cancels the future: the batcher skips it

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            closes = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = closes - loop.time()
                if remaining <= 0 or not self.incoming():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            self.metrics.queue_depth.set(self._queue.qsize())
            live = [(item, future) for item, future in batch if not future.done()]
            if live:
                await self._forward(live)

    async def _forward(self, live: list[tuple[In, asyncio.Future[Out]]]) -> None:
        self.metrics.batch_size.observe(len(live))
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._thread, self.predict, [i for i, _ in live])
        except Exception as error:  # every caller of the batch gets the failure
            log.exception("forward pass failed for a batch of %d", len(live))
            outputs = [error] * len(live)
        for (_, future), output in zip(live, outputs, strict=True):
            if future.done():
                continue
            if isinstance(output, BaseException):
                future.set_exception(output)
            else:
                future.set_result(output)
