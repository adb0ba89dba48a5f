"""Waiting for a server that is still starting: its port open while the model loads
(grpc.health.v1 answers NOT_SERVING, the API UNAVAILABLE "model is loading"), and, for
`facerecon-client wait` (`wait_for_connection`), its port not open yet either.

A client waits, bounded (`ready_timeout_s`, 60 s by default; 0 does not wait), before its first
call, so that a client started right after `make run` succeeds instead of failing; afterwards
the ordinary retry on UNAVAILABLE (`retry.py`) covers restarts. A server that cannot be reached
at all (nothing listening, a TLS handshake refused) is not waited for before a call: the call
itself then fails at once with gRPC's own error, which says why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE = "facerecon.v1.FaceReconService"
DEFAULT_READY_TIMEOUT_S = 60.0
POLL_S = 0.5
SERVING = health_pb2.HealthCheckResponse.SERVING
# Health answers that say "not yet": the port is not open (UNAVAILABLE), the check took too
# long on a busy starting server (DEADLINE_EXCEEDED).
WAIT_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ServerNotReady(RuntimeError):
    """The server did not report SERVING within the client's ready timeout."""


class _Waiting:
    """One wait's bookkeeping: what the server last said, when to give up, whom to tell."""

    def __init__(
        self,
        target: str,
        timeout_s: float,
        on_wait: Callable[[str], None] | None,
        wait_for_connection: bool,
    ):
        self.target, self.timeout_s, self.on_wait = target, timeout_s, on_wait
        self.wait_for_connection = wait_for_connection
        self.end = time.monotonic() + timeout_s
        self.last = ""
        self.told = False

    def check_timeout(self) -> float:
        """Seconds for the next check; ServerNotReady when the time is up."""
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise ServerNotReady(
                f"the server at {self.target} was not ready after {self.timeout_s:g} s "
                f"({self.last or 'no answer'}); is it running? (wait longer with "
                "ready_timeout_s / --ready-timeout)"
            )
        return max(0.05, min(remaining, 5.0))

    def status(self, reply: health_pb2.HealthCheckResponse) -> bool:
        """True when serving; else remembers why not."""
        if reply.status == SERVING:
            return True
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        self.note(f"health {name}: the model is loading" if name == "NOT_SERVING" else name)
        return False

    def error(self, error: grpc.RpcError) -> bool:
        """True when the error means there is nothing to wait for (no health service, or no
        connection and `wait_for_connection` is off: the call itself tells); re-raises errors
        that waiting cannot cure."""
        code = error.code()
        if code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND):
            return True
        if code not in WAIT_CODES:
            raise error
        if not self.wait_for_connection:
            return True
        self.note(f"{code.name}: {error.details() or 'no answer'}")
        return False

    def note(self, why: str) -> None:
        self.last = why
        if not self.told and self.on_wait is not None:
            self.told = True
            self.on_wait(f"waiting for the server at {self.target} ({why}) ...")

    def pause(self) -> float:
        return max(0.0, min(POLL_S, self.end - time.monotonic()))


def wait_until_ready(
    channel: grpc.Channel,
    target: str,
    timeout_s: float,
    metadata: tuple[tuple[str, str], ...] = (),
    on_wait: Callable[[str], None] | None = None,
    wait_for_connection: bool = False,
) -> bool:
    """Poll grpc.health.v1 for the service until SERVING (True); ServerNotReady after
    `timeout_s`.

    Waits while the server says NOT_SERVING (its model loading), and with
    `wait_for_connection` also while it cannot be reached; without, an unreachable server ends
    the wait at once (False; the call that follows reports it), as does a server without the
    health service."""
    if timeout_s <= 0:
        return False
    health = health_pb2_grpc.HealthStub(channel)
    waiting = _Waiting(target, timeout_s, on_wait, wait_for_connection)
    request = health_pb2.HealthCheckRequest(service=SERVICE)
    while True:
        timeout = waiting.check_timeout()
        try:
            if waiting.status(health.Check(request, timeout=timeout, metadata=metadata)):
                return True
        except grpc.RpcError as error:
            if waiting.error(error):
                return False
        time.sleep(waiting.pause())


async def wait_until_ready_async(
    channel: grpc.aio.Channel,
    target: str,
    timeout_s: float,
    metadata: tuple[tuple[str, str], ...] = (),
    on_wait: Callable[[str], None] | None = None,
    wait_for_connection: bool = False,
) -> bool:
    """`wait_until_ready` for grpc.aio channels."""
    if timeout_s <= 0:
        return False
    health = health_pb2_grpc.HealthStub(channel)
    waiting = _Waiting(target, timeout_s, on_wait, wait_for_connection)
    request = health_pb2.HealthCheckRequest(service=SERVICE)
    while True:
        timeout = waiting.check_timeout()
        try:
            if waiting.status(await health.Check(request, timeout=timeout, metadata=metadata)):
                return True
        except grpc.aio.AioRpcError as error:
            if waiting.error(error):
                return False
        await asyncio.sleep(waiting.pause())
