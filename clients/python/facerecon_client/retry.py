"""Retry on UNAVAILABLE only: exponential backoff with full jitter, within the deadline.

UNAVAILABLE means the request was not processed (server starting, restarting, draining), so
a retry is safe. RESOURCE_EXHAUSTED is left to the caller: retrying a busy server at once
only adds load.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # including the first
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def delays(self):
        """Sleep before each retry (full jitter: uniform in [0, backoff])."""
        backoff = self.initial_backoff_s
        for _ in range(self.attempts - 1):
            yield random.uniform(0, backoff)
            backoff = min(backoff * self.multiplier, self.max_backoff_s)


DEFAULT_RETRY = RetryPolicy()


def retryable(error: grpc.RpcError) -> bool:
    return isinstance(error, grpc.Call | grpc.aio.AioRpcError) and (
        error.code() == grpc.StatusCode.UNAVAILABLE
    )


class Deadline:
    """One overall deadline shared by all attempts of a call."""

    def __init__(self, timeout: float | None):
        self.end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    def allows(self, delay: float) -> bool:
        return self.end is None or time.monotonic() + delay < self.end
