"""Server credentials: TLS from PEM files, mutual TLS when a client CA bundle is given."""

from __future__ import annotations

from pathlib import Path

import grpc


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    """TLS with `cert` (chain) and `key`; with `client_ca`, clients must present a certificate
    signed by it (the handshake fails otherwise)."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca is not None else None,
        require_client_auth=client_ca is not None,
    )
