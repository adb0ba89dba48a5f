"""Blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import service_pb2_grpc
from facerecon_client.channel import ChannelSettings
from facerecon_client.ready import DEFAULT_READY_TIMEOUT_S, wait_until_ready
from facerecon_client.requests import build_request
from facerecon_client.retry import DEFAULT_RETRY, Deadline, RetryPolicy, retryable

RECONSTRUCT_TIMEOUT_S = 60.0  # a big photo on a busy CPU server takes seconds, not minutes
INFO_TIMEOUT_S = 10.0


class FaceReconClient:
    """`FaceReconClient("host:port", token=..., tls=True, root_certificates=Path(...))`.

    Before its first call the client waits, at most `ready_timeout_s` (0: not at all), for a
    server that is still starting or loading its model (`wait_until_ready`); `on_wait` is
    told once, in words, when it has to wait. Then `facerecon_client.ServerNotReady`."""

    def __init__(
        self,
        target: str,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        on_wait: Callable[[str], None] | None = None,
        **settings: Any,
    ):
        self.settings = ChannelSettings(target, **settings)
        self.retry = retry
        self.ready_timeout_s = ready_timeout_s
        self.on_wait = on_wait
        self._ready = False
        self.channel = self.settings.channel()
        self.stub = service_pb2_grpc.FaceReconServiceStub(self.channel)

    def wait_until_ready(
        self, timeout_s: float | None = None, wait_for_connection: bool = False
    ) -> bool:
        """Wait until the server's health check says SERVING (the model is loaded), at most
        `timeout_s` (default: the client's `ready_timeout_s`); ServerNotReady after that. A
        server that cannot be reached ends the wait at once unless `wait_for_connection`.
        True once it served; False when there was nothing to wait for (or `timeout_s` 0)."""
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        self._ready = wait_until_ready(
            self.channel,
            self.settings.target,
            timeout_s,
            self.settings.metadata(),
            self.on_wait,
            wait_for_connection,
        )
        return self._ready

    def reconstruct(
        self,
        image: bytes | pb.ReconstructRequest,
        *,
        timeout: float | None = RECONSTRUCT_TIMEOUT_S,
        **options: Any,
    ) -> pb.ReconstructResponse:
        """Reconstruct one photo: encoded bytes (plus `build_request` keyword options) or a
        ready ReconstructRequest. Raises grpc.RpcError (see `bad_request_fields`)."""
        request = (
            image if isinstance(image, pb.ReconstructRequest) else build_request(image, **options)
        )
        return self._unary(self.stub.Reconstruct, request, timeout)

    def reconstruct_stream(
        self, requests: Iterable[pb.ReconstructRequest], *, timeout: float | None = None
    ) -> Iterator[pb.ReconstructStreamResponse]:
        """Reconstruct many photos over one stream; replies arrive in completion order, each
        tagged with its request's id, errors in-band (`reply.error`). Not retried."""
        if not self._ready:
            self.wait_until_ready()
        messages = (pb.ReconstructStreamRequest(request=r) for r in requests)
        return self.stub.ReconstructStream(
            messages, timeout=timeout, metadata=self.settings.metadata()
        )

    def model_info(self, *, timeout: float | None = INFO_TIMEOUT_S) -> pb.GetModelInfoResponse:
        return self._unary(self.stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    def _unary(self, method, request, timeout: float | None):
        if not self._ready:
            self.wait_until_ready()
        deadline = Deadline(timeout)
        delays = self.retry.delays()
        while True:
            try:
                return method(
                    request, timeout=deadline.remaining(), metadata=self.settings.metadata()
                )
            except grpc.RpcError as error:
                delay = next(delays, None)
                if not retryable(error) or delay is None or not deadline.allows(delay):
                    raise
                time.sleep(delay)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> FaceReconClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
