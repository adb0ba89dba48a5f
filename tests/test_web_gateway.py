"""The web demo's gateway (clients/web) against a real gRPC server with a tiny model:
uploads, limits, the service's errors as HTTP answers, and the mesh downloads."""

from __future__ import annotations

import io
import socket
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
import trimesh
from grpc_harness import RunningServer, sample
from PIL import Image
from starlette.testclient import TestClient

from facerecon.reconstructor import Reconstructor
from facerecon.registration import FACE_TOPOLOGY, HEAD_TOPOLOGY
from facerecon.v1 import service_pb2_grpc
from facerecon_client import build_request
from facerecon_web import GatewaySettings, create_app

SMALL_VIEWS = ((-30, 0), (30, 0))
ICT = Path(__file__).resolve().parents[2] / "shared" / "facemodel" / "ict_face_light.npz"


@pytest.fixture(scope="module")
def reconstructor(tiny_weights) -> Reconstructor:
    return Reconstructor(tiny_weights, device="cpu")


@pytest.fixture(scope="module")
def server(reconstructor):
    with RunningServer(reconstructor) as running:
        yield running


@contextmanager
def socket_port():
    """A loopback port that nothing listens on (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def gateway(target: str, **settings) -> TestClient:
    """A TestClient of the gateway; enter it (`with`) to open its gRPC channel."""
    settings = {"views": SMALL_VIEWS, "view_size": 64, **settings}
    return TestClient(create_app(GatewaySettings(service=target, **settings)))


@pytest.fixture(scope="module")
def web(server):
    with gateway(server.target) as client:
        yield client


def post_photo(client: TestClient, data, content_type: str = "image/jpeg", **kwargs):
    return client.post(
        "/api/reconstruct", content=data, headers={"Content-Type": content_type}, **kwargs
    )


def test_reconstructs_a_photo_and_serves_its_meshes(web, astronaut_jpeg):
    reply = post_photo(web, astronaut_jpeg)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert reply.headers["cache-control"] == "no-store"
    assert body["model"]["name"] == "vrn-tiny"
    assert set(body["pose"]) == {"yaw", "pitch", "roll"}
    assert {"network", "total", "gateway_total"} <= set(body["timings_ms"])
    assert [(v["yaw"], v["pitch"]) for v in body["views"]] == [(-30, 0), (30, 0)]
    assert body["views"][0]["src"].startswith("data:image/png;base64,")
    assert body["frontal"] is not None
    assert body["face_source"] == "detector" and body["notes"] == []


def test_the_page_hears_when_no_face_was_found(web):
    grey = io.BytesIO()
    Image.fromarray(np.full((240, 200, 3), 128, np.uint8)).save(grey, format="PNG")
    reply = post_photo(web, grey.getvalue(), "image/png")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["face_source"] == "whole_image" and "found no face" in body["notes"][0]

    assert set(body["meshes"]) == {"glb", "ply", "obj"}
    for kind, file in body["meshes"].items():
        download = web.get(file["url"])
        assert download.status_code == 200
        assert download.headers["content-disposition"] == f'attachment; filename="face.{kind}"'
        assert len(download.content) == file["bytes"]
        mesh = trimesh.load(io.BytesIO(download.content), file_type=kind, force="mesh")
        assert len(mesh.vertices) > 100 and len(mesh.faces) > 100


def test_page_static_files_and_config(web):
    page = web.get("/")
    assert page.status_code == 200 and 'id="viewer"' in page.text
    assert "never stored" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    script = web.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    config = web.get("/api/config").json()
    assert config["allowed_types"] == ["image/jpeg", "image/png", "image/webp", "image/bmp"]
    assert config["max_upload_bytes"] == GatewaySettings().max_upload_bytes
    assert config["model"]["name"] == "vrn-tiny"


def test_registration_needs_the_face_model_409(web, astronaut_jpeg):
    assert web.get("/api/config").json()["registration"] is False
    reply = web.post("/api/reconstruct?registration=1", content=astronaut_jpeg,
                     headers={"Content-Type": "image/jpeg"})  # fmt: skip
    assert reply.status_code == 409
    assert "import-face-model" in reply.json()["error"]


def test_registration_adds_the_fitted_head_and_its_figures(tiny_weights, astronaut_jpeg):
    if not ICT.is_file():
        pytest.skip("needs ../shared/facemodel/ict_face_light.npz")
    with RunningServer(None, weights=tiny_weights, face_model=ICT) as server:
        with gateway(server.target) as client:
            assert client.get("/api/config").json()["registration"] is True
            plain = post_photo(client, astronaut_jpeg).json()
            assert plain["registration"] is None and "textured_glb" not in plain["meshes"]
            reply = client.post("/api/reconstruct?registration=1", content=astronaut_jpeg,
                                headers={"Content-Type": "image/jpeg"})  # fmt: skip
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["registration"]["topology"] in (HEAD_TOPOLOGY, FACE_TOPOLOGY)
            assert set(body["registration"]["pose"]) == {"yaw", "pitch", "roll"}
            assert {"registration", "texture"} <= set(body["timings_ms"])
            fitted = client.get(body["meshes"]["textured_glb"]["url"])
    assert fitted.status_code == 200
    assert fitted.headers["content-disposition"] == 'attachment; filename="face_fitted.glb"'
    scene = trimesh.load(io.BytesIO(fitted.content), file_type="glb")
    (mesh,) = scene.geometry.values()
    assert len(mesh.faces) > 10_000 and mesh.visual.material.baseColorTexture is not None


def test_unknown_result_and_kind_are_404(web):
    assert web.get("/api/results/nope/face.glb").status_code == 404
    assert web.get("/api/results/nope/face.stl").status_code == 404


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_too_large_is_413_before_the_service_is_called(server, astronaut_jpeg, declare_length):
    limit = len(astronaut_jpeg) - 1
    data = (
        astronaut_jpeg if declare_length else iter([astronaut_jpeg[:1000], astronaut_jpeg[1000:]])
    )
    with gateway(server.target, max_upload_bytes=limit) as client:
        reply = post_photo(client, data)
    assert reply.status_code == 413
    assert "larger than" in reply.json()["error"]


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", b"hello"),
        ("", b"\xff\xd8\xff\xe0"),
        ("image/gif", b"GIF89a" + bytes(20)),
        ("image/jpeg", b"this is not a photo"),  # declared JPEG, but not one
    ],
)
def test_wrong_type_is_415(web, content_type, data):
    reply = post_photo(web, data, content_type)
    assert reply.status_code == 415
    assert "JPEG, PNG, WebP or BMP" in reply.json()["error"]


def test_undecodable_photo_is_400_with_the_services_message(server, web, astronaut_jpeg):
    truncated = astronaut_jpeg[:300]  # a JPEG signature, then nothing decodable
    reply = post_photo(web, truncated)
    assert reply.status_code == 400
    with server.channel() as channel, pytest.raises(grpc.RpcError) as direct:
        service_pb2_grpc.FaceReconServiceStub(channel).Reconstruct(build_request(truncated))
    assert reply.json() == {
        "error": direct.value.details(),
        "fields": {"image": direct.value.details()},
    }


def test_empty_upload_is_400(web):
    reply = post_photo(web, b"")
    assert reply.status_code == 400 and reply.json()["error"] == "The upload is empty."


class GatedReconstructor:
    """Holds every request in `prepare` until `release` is set: the server stays busy."""

    def __init__(self, inner: Reconstructor):
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def prepare(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(30)
        return self.inner.prepare(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_overloaded_service_is_503_with_retry_after(reconstructor, astronaut_jpeg):
    gated = GatedReconstructor(reconstructor)
    with RunningServer(gated, max_inflight=1) as server, ThreadPoolExecutor(1) as pool:
        with server.channel() as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            busy = pool.submit(stub.Reconstruct, build_request(astronaut_jpeg), timeout=60)
            assert gated.entered.wait(30)  # the only slot is taken
            try:
                with gateway(server.target) as client:
                    reply = post_photo(client, astronaut_jpeg)
            finally:
                gated.release.set()
            assert busy.result().mesh.glb
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "5"
    assert "try again" in reply.json()["error"]


def test_full_gateway_is_503_without_calling_the_service(reconstructor, astronaut_jpeg):
    gated = GatedReconstructor(reconstructor)
    with RunningServer(gated, max_inflight=4) as server, ThreadPoolExecutor(1) as pool:
        with gateway(server.target, max_inflight=1) as client:
            first = pool.submit(post_photo, client, astronaut_jpeg)
            assert gated.entered.wait(30)  # the gateway's only upload slot is taken
            try:
                second = post_photo(client, astronaut_jpeg)
            finally:
                gated.release.set()
            assert first.result().status_code == 200
        metrics = server.metrics()
    assert second.status_code == 503 and second.headers["retry-after"] == "5"
    assert sample(metrics, "facerecon_rejected_requests_total", reason="inflight_limit") == 0


def test_unreachable_service_is_503(astronaut_jpeg):
    with socket_port() as port, gateway(f"127.0.0.1:{port}", timeout_s=3.0) as client:
        reply = post_photo(client, astronaut_jpeg)
    assert reply.status_code == 503 and "unreachable" in reply.json()["error"]


def test_large_upload_never_touches_the_disk(web, monkeypatch):
    # Multipart parsers spool bodies over 1 MB to temporary files; the gateway reads the raw
    # body into memory, so no temporary file is ever created.
    def refuse(*args, **kwargs):
        raise AssertionError("the gateway created a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG", compress_level=1)
    assert buffer.tell() > 2 << 20
    assert post_photo(web, buffer.getvalue(), "image/png").status_code == 200
