"""TLS, mutual TLS and bearer tokens, against a real server with certificates made here."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_harness import RunningServer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facerecon.reconstructor import Reconstructor
from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import service_pb2_grpc
from facerecon_client import FaceReconClient
from facerecon_client.retry import RetryPolicy

NO_RETRY = RetryPolicy(attempts=1)
# clients the server must turn away: no retries, no waiting for the server to look ready
REFUSED = dict(retry=NO_RETRY, ready_timeout_s=0)


@pytest.fixture(scope="module")
def reconstructor(tiny_weights) -> Reconstructor:
    return Reconstructor(tiny_weights, device="cpu")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, key, issuer_name: str, issuer_key, ca: bool, server: bool = False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert, key) -> tuple[Path, Path]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path.with_suffix(".crt"), path.with_suffix(".key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate signed by
    the CA and one signed by a stranger CA."""
    root = tmp_path_factory.mktemp("pki")
    files = {}
    for ca_name in ("ca", "stranger"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(ca_name, key, ca_name, key, ca=True)
        files[ca_name], files[f"{ca_name}_key"] = _write(root / ca_name, cert, key)
        files[f"{ca_name}_objects"] = (cert, key)
    ca_cert, ca_key = files["ca_objects"]
    stranger_cert, stranger_key = files["stranger_objects"]
    for name, issuer, issuer_key, server in [
        ("server", "ca", ca_key, True),
        ("client", "ca", ca_key, False),
        ("rogue", "stranger", stranger_key, False),
    ]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(name, key, issuer, issuer_key, ca=False, server=server)
        files[name], files[f"{name}_key"] = _write(root / name, cert, key)
    return files


def _info(client: FaceReconClient) -> pb.GetModelInfoResponse:
    return client.model_info(timeout=10)


def test_tls_serves_clients_that_trust_the_ca(reconstructor, pki):
    with RunningServer(reconstructor, tls_cert=pki["server"], tls_key=pki["server_key"]) as server:
        target = f"localhost:{server.port}"
        with FaceReconClient(target, root_certificates=pki["ca"]) as client:
            assert _info(client).model.name == "vrn-tiny"
        with FaceReconClient(target, root_certificates=pki["stranger"], **REFUSED) as client:
            with pytest.raises(grpc.RpcError) as caught:
                _info(client)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with FaceReconClient(target, **REFUSED) as plaintext:  # no TLS at all
            with pytest.raises(grpc.RpcError) as caught:
                _info(plaintext)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_from_the_ca(reconstructor, pki):
    config = dict(tls_cert=pki["server"], tls_key=pki["server_key"], tls_client_ca=pki["ca"])
    with RunningServer(reconstructor, **config) as server:
        target = f"localhost:{server.port}"
        trusted = dict(root_certificates=pki["ca"])
        with FaceReconClient(
            target, **trusted, certificate_chain=pki["client"], private_key=pki["client_key"]
        ) as client:
            assert _info(client).model.name == "vrn-tiny"
        for cert in (None, "rogue"):
            client_cert = (
                dict(certificate_chain=pki[cert], private_key=pki[f"{cert}_key"]) if cert else {}
            )
            with FaceReconClient(target, **trusted, **client_cert, **REFUSED) as client:
                with pytest.raises(grpc.RpcError) as caught:
                    _info(client)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_bearer_tokens(reconstructor, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("first-secret\n\nsecond-secret\n")
    with RunningServer(reconstructor, auth_tokens_file=tokens) as server:
        for token in ("first-secret", "second-secret"):
            with FaceReconClient(server.target, token=token) as client:
                assert _info(client).model.name == "vrn-tiny"
        for token, code in [
            (None, grpc.StatusCode.UNAUTHENTICATED),
            ("wrong", grpc.StatusCode.PERMISSION_DENIED),
        ]:
            with FaceReconClient(server.target, token=token) as client:
                with pytest.raises(grpc.RpcError) as caught:
                    _info(client)
                assert caught.value.code() == code
        with server.channel() as channel:
            # Health stays open to probes; the API and reflection do not.
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.ReconstructStream(iter([]), timeout=10))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metrics = server.metrics()
    rejected = {
        dict(labels)["reason"]: v
        for (name, labels), v in metrics.items()
        if name == "facerecon_rejected_requests_total"
    }
    assert rejected == {"unauthenticated": 2.0, "permission_denied": 1.0}


def test_plaintext_health_port_beside_a_tls_api(reconstructor, pki):
    config = dict(tls_cert=pki["server"], tls_key=pki["server_key"], health_port=0)
    with RunningServer(reconstructor, **config) as server:
        assert server.server.health_port not in (None, 0, server.port)
        with grpc.insecure_channel(f"127.0.0.1:{server.server.health_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:  # the API is not served there
                stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
