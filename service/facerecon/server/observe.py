"""An interceptor that sees every call end: gRPC metrics and one JSON access-log line per call.

It wraps unary and streaming handlers alike, counts messages in and out, and works out the
final status code: the one the handler set or aborted with, CANCELLED / DEADLINE_EXCEEDED when
the client went away, UNKNOWN for an unexpected exception. The log line carries the request
id, never a request's content.

Every call the server receives is counted once in grpc_server_handled_total, also those gRPC
would end before any handler runs:
- a message that does not parse (malformed protobuf, a string that is not UTF-8) ends the call
  with INVALID_ARGUMENT (gRPC itself would answer UNKNOWN, naming a Python exception);
- unary methods are served as request-streaming ones (the same bytes on the wire), so the
  handler runs even when the request message never arrives: over the size limit
  (RESOURCE_EXHAUSTED) or the deadline passed first (DEADLINE_EXCEEDED);
- unknown methods are answered UNIMPLEMENTED here, labelled grpc_service="unknown",
  grpc_method="unknown" (a client must not be able to add label values).
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
_HEALTH = "/grpc.health.v1.Health/"


class Malformed:
    """What the tolerant deserializer gives for bytes that do not parse (never raises)."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def message(self) -> str:
        return (
            f"the request is not a valid {self.type_name} message (malformed protobuf, or a "
            "string field that is not UTF-8)"
        )


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer` that returns a Malformed instead of raising."""
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    type_name = getattr(descriptor, "full_name", "request")

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # DecodeError, UnicodeDecodeError, anything a parser raises
            return Malformed(type_name)

    return parse


UNKNOWN_METHOD = "/unknown/unknown"


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics, max_receive_message_bytes: int | None = None):
        self.metrics = metrics
        self.max_receive_message_bytes = max_receive_message_bytes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:  # unknown method: answered (and counted) here
            return grpc.stream_stream_rpc_method_handler(self._unimplemented)
        kind = grpc_type(handler)
        method = details.method
        parse = tolerant(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.unary_unary, kind, method),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        wrap = self._streaming
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap(handler.unary_stream, kind, method, request_streaming=False),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap(handler.stream_unary, kind, method, request_streaming=True),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            wrap(handler.stream_stream, kind, method, request_streaming=True),
            request_deserializer=parse,
            response_serializer=handler.response_serializer,
        )

    async def _unimplemented(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        stats = CallStats(self.metrics, "unknown", UNKNOWN_METHOD)
        self.metrics.rejected.labels("unknown_method").inc()
        code = grpc.StatusCode.UNIMPLEMENTED
        try:
            await context.abort(code, "unknown method")
        except asyncio.CancelledError:
            code = _gone(context)
            raise
        finally:
            self._log(stats, UNKNOWN_METHOD, code, context, "")

    async def _first_message(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        """A unary call's request; the call is aborted when it did not arrive or is
        malformed."""
        request = await anext(aiter(requests), None)
        if request is None:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the request"
                )
            # gRPC refused a message over the size limit (and has told the client so)
            self.metrics.rejected.labels("message_too_large").inc()
            limit = self.max_receive_message_bytes
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "no request message arrived: it was over this server's limit"
                + (f" of {limit:,} bytes" if limit else ""),
            )
        return request

    def _unary(self, behaviour: Callable, kind: str, method: str) -> Callable:
        async def observed(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            stats = CallStats(self.metrics, kind, method)
            code = grpc.StatusCode.UNKNOWN
            request = None
            try:
                request = await self._first_message(requests, context)
                stats.received()
                if isinstance(request, Malformed):
                    self.metrics.rejected.labels("malformed").inc()
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message())
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
                request_id = getattr(request, "request_id", "")
                self._log(stats, method, code, context, request_id)

        return observed

    def _streaming(
        self, behaviour: Callable, kind: str, method: str, request_streaming: bool
    ) -> Callable:
        def count_requests(
            requests: AsyncIterator[Any], stats: CallStats, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            async def counted() -> AsyncIterator[Any]:
                async for request in requests:
                    stats.received()
                    if isinstance(request, Malformed):  # ends the whole call
                        self.metrics.rejected.labels("malformed").inc()
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message())
                    yield request

            return counted()

        async def one_request(request: Any, context: grpc.aio.ServicerContext) -> None:
            if isinstance(request, Malformed):
                self.metrics.rejected.labels("malformed").inc()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message())

        if inspect.isasyncgenfunction(behaviour):

            async def observed_gen(request: Any, context: grpc.aio.ServicerContext):
                stats = CallStats(self.metrics, kind, method)
                code = grpc.StatusCode.UNKNOWN
                if request_streaming:
                    request = count_requests(request, stats, context)
                else:
                    stats.received()
                try:
                    if not request_streaming:
                        await one_request(request, context)
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
                request = count_requests(request, stats, context)
            else:
                stats.received()
            try:
                if not request_streaming:
                    await one_request(request, context)
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
        if method.startswith(_HEALTH) and code == grpc.StatusCode.OK:
            level = logging.DEBUG  # probes and clients waiting for readiness: counted, not logged
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
