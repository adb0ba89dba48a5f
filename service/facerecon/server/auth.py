"""Bearer-token check: metadata `authorization: Bearer <token>` on every call.

Missing, malformed or repeated header -> UNAUTHENTICATED (with two `authorization` headers
neither is trusted: proxies and libraries disagree on which one counts); a token that is not
one of ours -> PERMISSION_DENIED. The health service stays open so that load balancers and
kubelet probes, which carry no secrets, can check the server; it reveals only SERVING /
NOT_SERVING.
Reflection needs a token like the API does (`grpcurl -H 'authorization: Bearer ...'`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import grpc

from facerecon.server.metrics import ServerMetrics

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: frozenset[str], metrics: ServerMetrics):
        if not tokens:
            raise ValueError("no tokens: leave the interceptor out to disable the check")
        self._tokens = [t.encode() for t in tokens]
        self.metrics = metrics

    def _allowed(self, token: str) -> bool:
        # Compare against every token in constant time: no early exit leaks which matched.
        given = token.encode()
        return sum(hmac.compare_digest(given, t) for t in self._tokens) > 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(OPEN_PREFIXES):
            return await continuation(details)
        headers = [
            value for key, value in details.invocation_metadata or () if key == "authorization"
        ]
        if len(headers) > 1:
            self.metrics.rejected.labels("unauthenticated").inc()
            return await _refuse(
                continuation,
                details,
                grpc.StatusCode.UNAUTHENTICATED,
                "more than one 'authorization' header: send exactly one",
            )
        header = headers[0] if headers else ""
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.metrics.rejected.labels("unauthenticated").inc()
            return await _refuse(
                continuation,
                details,
                grpc.StatusCode.UNAUTHENTICATED,
                "missing 'authorization: Bearer <token>' metadata",
            )
        if not self._allowed(token.strip()):
            self.metrics.rejected.labels("permission_denied").inc()
            return await _refuse(
                continuation,
                details,
                grpc.StatusCode.PERMISSION_DENIED,
                "the bearer token is not valid for this server",
            )
        return await continuation(details)


async def _refuse(
    continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
    details: grpc.HandlerCallDetails,
    code: grpc.StatusCode,
    message: str,
) -> grpc.RpcMethodHandler | None:
    """A handler of the method's own shape that aborts with `code`."""
    handler = await continuation(details)
    if handler is None:
        return None

    async def abort(_request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(abort, **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(abort, **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(abort, **kw)
    return grpc.stream_stream_rpc_method_handler(abort, **kw)
