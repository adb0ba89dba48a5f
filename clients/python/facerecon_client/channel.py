"""Channels to a facerecon server: plaintext, TLS or mutual TLS, sized for big replies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

MiB = 1 << 20
# Match the server's defaults: a 40-megapixel photo in, meshes and views out.
OPTIONS = [
    ("grpc.max_send_message_length", 64 * MiB),
    ("grpc.max_receive_message_length", 128 * MiB),
    # Transparent retries are handled by the client's own loop, not by gRPC's buffer.
    ("grpc.enable_retries", 0),
    # Reconnect within 2 s of a server coming up (gRPC's default backoff grows to 120 s), so
    # that a client waiting for a starting server notices it soon.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclass(frozen=True)
class ChannelSettings:
    """Where and how to connect. `root_certificates` etc. are PEM file paths."""

    target: str
    tls: bool = False
    root_certificates: Path | None = None  # None: the system's roots
    certificate_chain: Path | None = None  # client certificate, for mutual TLS
    private_key: Path | None = None
    token: str | None = None  # bearer token sent as `authorization` metadata

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not (self.tls or self.root_certificates or self.certificate_chain):
            return None
        read = lambda p: p.read_bytes() if p is not None else None  # noqa: E731
        return grpc.ssl_channel_credentials(
            root_certificates=read(self.root_certificates),
            private_key=read(self.private_key),
            certificate_chain=read(self.certificate_chain),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self) -> grpc.Channel:
        credentials = self.credentials()
        if credentials is None:
            return grpc.insecure_channel(self.target, options=OPTIONS)
        return grpc.secure_channel(self.target, credentials, options=OPTIONS)

    def aio_channel(self) -> grpc.aio.Channel:
        credentials = self.credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(self.target, options=OPTIONS)
        return grpc.aio.secure_channel(self.target, credentials, options=OPTIONS)
