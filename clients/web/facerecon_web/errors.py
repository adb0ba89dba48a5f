"""Errors the gateway answers with, and how the service's gRPC errors map onto them."""

from __future__ import annotations

import grpc

from facerecon_client import bad_request_fields

# Seconds a client is asked to wait (Retry-After) when the service is busy or starting.
RETRY_AFTER_S = 5


class GatewayError(Exception):
    """An HTTP error with a message meant for the person using the page."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields or {}
        self.headers = headers or {}


def busy() -> GatewayError:
    """503 for a full gateway or a service at its in-flight limit: come back shortly."""
    message = f"The service is busy right now. Please try again in {RETRY_AFTER_S} seconds."
    return GatewayError(503, message, headers={"Retry-After": str(RETRY_AFTER_S)})


def from_rpc_error(error: grpc.RpcError) -> GatewayError:
    """INVALID_ARGUMENT -> 400 with the service's message and field violations (no face,
    undecodable photo, too many pixels); FAILED_PRECONDITION (a feature the service lacks,
    e.g. the face model) -> 409 with its message; RESOURCE_EXHAUSTED / UNAVAILABLE -> 503
    with Retry-After; DEADLINE_EXCEEDED -> 504; anything else -> 502."""
    code = error.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return GatewayError(
            400, error.details() or "The photo was refused.", fields=bad_request_fields(error)
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return GatewayError(409, error.details() or "The service cannot do this.")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return busy()
    if code == grpc.StatusCode.UNAVAILABLE:
        message = "The reconstruction service is starting or unreachable. Please try again shortly."
        return GatewayError(503, message, headers={"Retry-After": str(RETRY_AFTER_S)})
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return GatewayError(504, "The reconstruction took too long. Please try a smaller photo.")
    return GatewayError(502, f"The reconstruction service failed ({code.name}).")
