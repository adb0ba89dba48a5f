"""Server credentials: TLS from PEM files, mutual TLS when a client CA bundle is given."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    """TLS with `cert` (chain) and `key`; with `client_ca`, clients must present a certificate
    signed by it (the handshake fails otherwise).

    ValueError, saying what is wrong, when the files cannot be read, the key does not match
    the certificate, or the CA bundle holds no certificate (gRPC would only fail to bind)."""
    check_files(cert, key, client_ca)
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca is not None else None,
        require_client_auth=client_ca is not None,
    )


def check_files(cert: Path, key: Path, client_ca: Path | None = None) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for path, flag in ((cert, "--tls-cert"), (key, "--tls-key"), (client_ca, "--tls-client-ca")):
        if path is not None and not path.is_file():
            raise ValueError(f"{flag} {path}: no such file")
    try:
        # password: an encrypted key is refused rather than prompted for (gRPC cannot use it)
        context.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error) or "key values mismatch" in str(error):
            raise ValueError(
                f"--tls-key {key} does not match the certificate in --tls-cert {cert}"
            ) from None
        raise ValueError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate chain and its "
            f"unencrypted private key ({error.reason or error})"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(client_ca))
        except ssl.SSLError as error:
            raise ValueError(
                f"--tls-client-ca {client_ca}: no PEM CA certificate in it ({error.reason})"
            ) from None
