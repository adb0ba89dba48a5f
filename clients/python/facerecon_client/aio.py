"""asyncio client (grpc.aio): the same calls as FaceReconClient, awaitable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

import grpc

from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import service_pb2_grpc
from facerecon_client.channel import ChannelSettings
from facerecon_client.client import INFO_TIMEOUT_S, RECONSTRUCT_TIMEOUT_S
from facerecon_client.ready import DEFAULT_READY_TIMEOUT_S, wait_until_ready_async
from facerecon_client.requests import build_request
from facerecon_client.retry import DEFAULT_RETRY, Deadline, RetryPolicy, retryable


class AsyncFaceReconClient:
    """`async with AsyncFaceReconClient("host:port") as client: await client.reconstruct(...)`."""

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
        self.channel = self.settings.aio_channel()
        self.stub = service_pb2_grpc.FaceReconServiceStub(self.channel)

    async def wait_until_ready(
        self, timeout_s: float | None = None, wait_for_connection: bool = False
    ) -> bool:
        """See FaceReconClient.wait_until_ready."""
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        self._ready = await wait_until_ready_async(
            self.channel,
            self.settings.target,
            timeout_s,
            self.settings.metadata(),
            self.on_wait,
            wait_for_connection,
        )
        return self._ready

    async def reconstruct(
        self,
        image: bytes | pb.ReconstructRequest,
        *,
        timeout: float | None = RECONSTRUCT_TIMEOUT_S,
        **options: Any,
    ) -> pb.ReconstructResponse:
        """See FaceReconClient.reconstruct."""
        request = (
            image if isinstance(image, pb.ReconstructRequest) else build_request(image, **options)
        )
        return await self._unary(self.stub.Reconstruct, request, timeout)

    async def reconstruct_stream(
        self,
        requests: Iterable[pb.ReconstructRequest] | AsyncIterable[pb.ReconstructRequest],
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.ReconstructStreamResponse]:
        """See FaceReconClient.reconstruct_stream."""

        async def messages() -> AsyncIterator[pb.ReconstructStreamRequest]:
            if isinstance(requests, AsyncIterable):
                async for r in requests:
                    yield pb.ReconstructStreamRequest(request=r)
            else:
                for r in requests:
                    yield pb.ReconstructStreamRequest(request=r)

        if not self._ready:
            await self.wait_until_ready()
        call = self.stub.ReconstructStream(
            messages(), timeout=timeout, metadata=self.settings.metadata()
        )
        async for reply in call:
            yield reply

    async def model_info(
        self, *, timeout: float | None = INFO_TIMEOUT_S
    ) -> pb.GetModelInfoResponse:
        return await self._unary(self.stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    async def _unary(self, method, request, timeout: float | None):
        if not self._ready:
            await self.wait_until_ready()
        deadline = Deadline(timeout)
        delays = self.retry.delays()
        while True:
            try:
                return await method(
                    request, timeout=deadline.remaining(), metadata=self.settings.metadata()
                )
            except grpc.aio.AioRpcError as error:
                delay = next(delays, None)
                if not retryable(error) or delay is None or not deadline.allows(delay):
                    raise
                await asyncio.sleep(delay)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncFaceReconClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
