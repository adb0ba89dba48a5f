"""Dynamic batching: requests arriving close together share one forward pass.

The first waiting item opens a batch; the batch closes when it is full, or `max_wait_s` after
it opened, or as soon as no other request is on its way (`incoming()` is 0: nobody is being
decoded and cropped), whichever comes first. Items already queued are taken at once, so a
backlog always forms full batches, and a lone request on an idle server never waits.

Batches run one at a time in a dedicated thread: the network is the bottleneck and one
forward pass at a time keeps its latency predictable while the event loop and the CPU pool
prepare the next batch. Items whose caller has gone (cancelled, deadline passed) are dropped
before the forward pass.

The queue itself is not bounded here: admission control bounds the requests in flight, and an
item stays charged to its request (`release` is called only once the batcher has let go of
it) until it has been dropped or has gone through the network, so a cancelled caller's item
never lets a new request in while it still sits in the queue.
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
        self.capacity = capacity  # admission's limit: what the queue holds at most, live
        self._queue: asyncio.Queue[tuple[In, asyncio.Future[Out], Callable[[], None]]] = (
            asyncio.Queue()
        )
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="facerecon-network")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self, timeout: float | None = None) -> bool:
        """Stop batching; wait up to `timeout` seconds (None: for ever) for a forward pass
        in progress. True when the network thread has stopped."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            _, future, release = self._queue.get_nowait()
            future.cancel()
            release()
        self._thread.shutdown(wait=False, cancel_futures=True)
        return await join_threads(self._thread, timeout)

    async def submit(self, item: In, release: Callable[[], None] = lambda: None) -> Out:
        """The prediction for `item`, computed in some batch. `release` is called once the
        batcher has let go of the item (after its forward pass, or when dropped)."""
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future, release))
        self.metrics.queue_depth.set(self._queue.qsize())
        return await future  # cancelling this cancels the future: the batcher skips it

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            try:
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
                live = []
                for item, future, release in batch:
                    if future.done():  # its caller has gone: drop it now
                        release()
                    else:
                        live.append((item, future))
                if live:
                    await self._forward(live)
            finally:
                for _, _, release in batch:
                    release()  # idempotent: the request's data is no longer held here

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


async def join_threads(pool: ThreadPoolExecutor, timeout: float | None) -> bool:
    """Whether `pool`'s threads (already told to shut down) end within `timeout` seconds."""
    threads = list(getattr(pool, "_threads", ()))
    loop = asyncio.get_running_loop()
    end = None if timeout is None else loop.time() + timeout
    for thread in threads:
        left = None if end is None else max(0.0, end - loop.time())
        await asyncio.to_thread(thread.join, left)
        if thread.is_alive():
            return False
    return True
