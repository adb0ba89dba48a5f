"""Failures as google.rpc.Status: the same status travels as a call's error (unary) or
in-band in a stream reply, with machine-readable details (google.rpc.BadRequest)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from facerecon.errors import InputError


class RpcFailure(Exception):
    """Ends one request with `status` (raised inside the request pipeline)."""

    def __init__(self, status: status_pb2.Status):
        super().__init__(status.message)
        self.status = status


def failure(code: grpc.StatusCode, message: str) -> RpcFailure:
    return RpcFailure(status_pb2.Status(code=code.value[0], message=message))


def bad_request(error: InputError) -> RpcFailure:
    """INVALID_ARGUMENT with a google.rpc.BadRequest naming the field at fault."""
    violation = error_details_pb2.BadRequest.FieldViolation(
        field=error.field, description=error.message
    )
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return RpcFailure(
        status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=error.message, details=[detail])
    )


async def abort(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    """End the call with `status`, details in the grpc-status-details-bin trailer."""
    await context.abort_with_status(rpc_status.to_status(status))
