"""An interceptor that sees every call end: gRPC metrics and one JSON access-log line per call.

It wraps unary and streaming handlers alike, counts messages in and out, and works out the
final status code: the one the handler set or aborted with, CANCELLED / DEADLINE_EXCEEDED when
the client went away, UNKNOWN for an unexpected exception. The log line carries the request
id, never a request's content.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from facerecon.server.metrics import CallStats, ServerMetrics, grpc_type

ACCESS_LOG = logging.getLogger("facerecon.access")


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics):
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return handler
        kind = grpc_type(handler)
        method = details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, kind, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        wrap = self._streaming
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap(handler.unary_stream, kind, method, request_streaming=False),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap(handler.stream_unary, kind, method, request_streaming=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            wrap(handler.stream_stream, kind, method, request_streaming=True),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(self, behaviour: Callable, kind: str, method: str) -> Callable:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            stats = CallStats(self.metrics, kind, method)
            stats.received()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await behaviour(request, context)
                code = _code(context, grpc.StatusCode.OK)
                if code is grpc.StatusCode.OK:
                    stats.sent()
                return response
            except asyncio.CancelledError:
                code = _gone(context)
                raise
            except BaseException:
                code = _code(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                self._log(stats, method, code, context, getattr(request, "request_id", ""))

        return observed

    def _streaming(
        self, behaviour: Callable, kind: str, method: str, request_streaming: bool
    ) -> Callable:
        def count_requests(requests: AsyncIterator[Any], stats: CallStats) -> AsyncIterator[Any]:
            async def counted() -> AsyncIterator[Any]:
                async for request in requests:
                    stats.received()
                    yield request

            return counted()

        if inspect.isasyncgenfunction(behaviour):

            async def observed_gen(request: Any, context: grpc.aio.ServicerContext):
                stats = CallStats(self.metrics, kind, method)
                code = grpc.StatusCode.UNKNOWN
                if request_streaming:
                    request = count_requests(request, stats)
                else:
                    stats.received()
                try:
                    async for response in behaviour(request, context):
                        stats.sent()
                        yield response
                    code = _code(context, grpc.StatusCode.OK)
                except asyncio.CancelledError:
                    code = _gone(context)
                    raise
                except BaseException:
                    code = _code(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    self._log(stats, method, code, context, "")

            return observed_gen

        # Handlers that write through context.write (e.g. health Watch): messages sent by
        # them are not counted, their outcome is.
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            stats = CallStats(self.metrics, kind, method)
            code = grpc.StatusCode.UNKNOWN
            if request_streaming:
                request = count_requests(request, stats)
            else:
                stats.received()
            try:
                result = await behaviour(request, context)
                code = _code(context, grpc.StatusCode.OK)
                return result
            except asyncio.CancelledError:
                code = _gone(context)
                raise
            except BaseException:
                code = _code(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                self._log(stats, method, code, context, "")

        return observed

    def _log(
        self,
        stats: CallStats,
        method: str,
        code: grpc.StatusCode,
        context: grpc.aio.ServicerContext,
        request_id: str,
    ) -> None:
        elapsed = stats.finished(code)
        level = logging.ERROR if code in _SERVER_FAULTS else logging.INFO
        ACCESS_LOG.log(
            level,
            "rpc",
            extra={
                "fields": {
                    "method": method,
                    "code": code.name,
                    "latency_ms": round(elapsed * 1000.0, 2),
                    "peer": context.peer(),
                    "request_id": request_id[:128],
                    "messages_in": stats.messages_in,
                    "messages_out": stats.messages_out,
                }
            },
        )


_SERVER_FAULTS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}


def _code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    """The code the handler set (set_code or abort), else `default`."""
    code = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    return _BY_VALUE.get(code, default)


_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}


def _gone(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Why a handler was cancelled: its deadline passed, or the client cancelled."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
