"""The gRPC server end to end: real server on a loopback port, real channels, tiny model."""

from __future__ import annotations

import concurrent.futures
import io
import threading
import time

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from grpc_harness import RunningServer, sample
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from PIL import Image

from facerecon.models import file_sha256
from facerecon.reconstructor import Reconstructor
from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import service_pb2_grpc
from facerecon.v1 import types_pb2 as types
from facerecon_client import bad_request_fields, build_request, mesh_arrays

SERVICE = "facerecon.v1.FaceReconService"


@pytest.fixture(scope="module")
def reconstructor(tiny_weights) -> Reconstructor:
    return Reconstructor(tiny_weights, device="cpu")


@pytest.fixture(scope="module")
def server(reconstructor):
    with RunningServer(reconstructor) as running:
        yield running


@pytest.fixture
def stub(server):
    with server.channel() as channel:
        yield service_pb2_grpc.FaceReconServiceStub(channel)


def test_reconstruct_returns_every_encoding_views_and_pose(stub, astronaut_jpeg):
    request = build_request(
        astronaut_jpeg,
        request_id="req-1",
        mesh_encodings=("raw", "glb", "ply", "obj"),
        views=[(-45, 0), (30, 10)],
        view_size=64,
        frontal_view=True,
        pose=True,
    )
    reply = stub.Reconstruct(request, timeout=60)

    assert reply.request_id == "req-1"
    assert (reply.model.name, reply.model.version) == ("vrn-tiny", "test")
    arrays = mesh_arrays(reply.mesh.raw)
    assert arrays["vertices"].shape == (reply.mesh.raw.vertex_count, 3)
    assert reply.mesh.raw.vertex_count > 0 and reply.mesh.raw.face_count > 0
    assert arrays["faces"].max() < reply.mesh.raw.vertex_count
    assert (
        arrays["colors"].dtype == np.uint8 and arrays["normals"].shape == arrays["vertices"].shape
    )
    assert reply.mesh.glb[:4] == b"glTF"
    assert reply.mesh.ply.startswith(b"ply")
    assert b"\nv " in reply.mesh.obj or reply.mesh.obj.startswith(b"v ")
    assert [(v.yaw_deg, v.pitch_deg) for v in reply.views] == [(-45, 0), (30, 10)]
    for view in [*reply.views, reply.frontal_view]:
        assert (view.width, view.height, view.format) == (64, 64, types.IMAGE_FORMAT_PNG)
        assert Image.open(io.BytesIO(view.image)).size == (64, 64)
    assert reply.HasField("pose")
    expected = {"decode", "crop", "queue", "network", "mesh", "pose", "render", "encode", "total"}
    assert expected <= set(reply.timings_ms)
    assert reply.timings_ms["total"] >= reply.timings_ms["network"] > 0


def test_defaults_give_glb_only_and_jpeg_views_are_opaque(stub, astronaut_jpeg):
    reply = stub.Reconstruct(build_request(astronaut_jpeg, pose=False), timeout=60)
    assert reply.mesh.glb and not reply.mesh.ply and not reply.mesh.HasField("raw")
    assert not reply.views and not reply.HasField("frontal_view") and not reply.HasField("pose")

    request = build_request(
        astronaut_jpeg, views=[(0, 0)], view_size=48, view_format="jpeg", background=(0, 0, 255)
    )
    (view,) = stub.Reconstruct(request, timeout=60).views
    image = Image.open(io.BytesIO(view.image))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (48, 48))
    assert np.asarray(image)[0, 0, 2] > 200  # the corner shows the blue background


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda r: setattr(r, "image", b"not an image at all"), "image"),
        (lambda r: setattr(r, "image", b""), "image"),
        (lambda r: r.landmarks.xy.extend([1.0] * 7), "landmarks"),
        (lambda r: setattr(r.options, "view_size", 5), "options.view_size"),
        (lambda r: r.options.views.add(yaw_deg=500), "options.views"),
        (lambda r: r.options.mesh_encodings.append(42), "options.mesh_encodings"),
        (lambda r: setattr(r.options, "view_format", 7), "options.view_format"),
        (lambda r: setattr(r.options, "decimate_faces", 10), "options.decimate_faces"),
        (lambda r: setattr(r, "request_id", "x" * 129), "request_id"),
    ],
)
def test_bad_input_is_invalid_argument_with_the_field(stub, astronaut_jpeg, change, field):
    request = build_request(astronaut_jpeg)
    change(request)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Reconstruct(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_request_fields(caught.value)
    assert rpc_status.from_call(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_stream_answers_every_request_once_with_errors_in_band(stub, astronaut_jpeg):
    good = [build_request(astronaut_jpeg, request_id=f"ok-{i}", pose=False) for i in range(5)]
    bad = build_request(b"garbage", request_id="bad")
    unnamed = build_request(astronaut_jpeg)  # gets its position in the stream as its id
    requests = [good[0], bad, *good[1:], unnamed]
    replies = list(
        stub.ReconstructStream(
            (pb.ReconstructStreamRequest(request=r) for r in requests), timeout=120
        )
    )

    by_id = {r.request_id: r for r in replies}
    assert len(replies) == len(requests) and set(by_id) == {
        *(f"ok-{i}" for i in range(5)),
        "bad",
        "6",
    }
    for rid in [*(f"ok-{i}" for i in range(5)), "6"]:
        assert by_id[rid].response.request_id == rid and by_id[rid].response.mesh.glb
    error = by_id["bad"].error
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "image" in bad_request_fields(error)


def test_get_model_info(stub, tiny_weights):
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert info.model.name == "vrn-tiny" and info.weights_sha256 == file_sha256(tiny_weights)
    assert (info.input_size, info.volume_slices, info.device) == (192, 200, "cpu")
    assert info.parameters > 0
    assert info.limits.max_inflight_requests == 8 and info.limits.max_batch_size == 4
    assert info.limits.max_receive_message_bytes == 64 << 20
    assert info.limits.max_views == 16 and info.limits.max_view_size == 1024
    assert "mesh_glb" in info.features and "face_detector" in info.features  # on by default


def test_health_and_reflection(server):
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        database = ProtoReflectionDescriptorDatabase(channel)
        assert SERVICE in database.get_services()
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName(SERVICE).FindMethodByName("ReconstructStream")
        assert method.input_type.full_name == "facerecon.v1.ReconstructStreamRequest"
        assert method.client_streaming and method.server_streaming


class GatedReconstructor:
    """A Reconstructor whose warm-up waits for `release`: the server is up but not ready."""

    def __init__(self, inner: Reconstructor):
        self.inner = inner
        self.release = threading.Event()

    def warmup(self) -> None:
        assert self.release.wait(30)
        self.inner.warmup()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_not_serving_and_unavailable_until_the_model_is_warm(reconstructor, astronaut_jpeg):
    gated = GatedReconstructor(reconstructor)
    with RunningServer(gated, wait_ready=False) as server, server.channel() as ch:
        health = health_pb2_grpc.HealthStub(ch)
        check = lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5).status  # noqa: E731
        assert check() == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = service_pb2_grpc.FaceReconServiceStub(ch)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Reconstruct(build_request(astronaut_jpeg), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        gated.release.set()
        server.run(server.server.ready())
        assert check() == health_pb2.HealthCheckResponse.SERVING
        assert stub.Reconstruct(build_request(astronaut_jpeg), timeout=60).mesh.glb


def test_beyond_the_inflight_cap_calls_are_refused_at_once(reconstructor, astronaut_jpeg):
    request = build_request(astronaut_jpeg, views=[(0, 0)], view_size=128)
    with RunningServer(reconstructor, max_inflight=2) as server:
        with server.channel() as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            calls = [stub.Reconstruct.future(request, timeout=120) for _ in range(64)]
            codes = []
            for call in calls:
                try:
                    call.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    codes.append(error.code())
        metrics = server.metrics()
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert sample(metrics, "facerecon_rejected_requests_total", reason="inflight_limit") == refused
    assert sample(metrics, "facerecon_inflight_requests") == 0


def test_expired_deadline_frees_its_slot(reconstructor, astronaut_jpeg):
    slow = build_request(astronaut_jpeg, views=[(y, 0) for y in range(-80, 80, 10)], view_size=1024)
    with RunningServer(reconstructor, max_inflight=1) as server:
        with server.channel() as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Reconstruct(slow, timeout=0.05)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # The one slot comes back once the abandoned job stops: the next call succeeds.
            end = time.monotonic() + 30
            while (
                sample(server.metrics(), "facerecon_inflight_requests") and time.monotonic() < end
            ):
                time.sleep(0.05)
            assert sample(server.metrics(), "facerecon_inflight_requests") == 0
            assert stub.Reconstruct(build_request(astronaut_jpeg), timeout=60).mesh.glb


def test_metrics_count_what_the_calls_did(server, stub, astronaut_jpeg):
    before = server.metrics()
    stub.Reconstruct(build_request(astronaut_jpeg, pose=False), timeout=60)
    stub.Reconstruct(build_request(astronaut_jpeg, pose=False), timeout=60)
    with pytest.raises(grpc.RpcError):
        stub.Reconstruct(build_request(b"junk"), timeout=60)
    stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    after = server.metrics()

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    rpc = dict(grpc_type="unary", grpc_service=SERVICE, grpc_method="Reconstruct")
    assert delta("grpc_server_started_total", **rpc) == 3
    assert delta("grpc_server_handled_total", **rpc, grpc_code="OK") == 2
    assert delta("grpc_server_handled_total", **rpc, grpc_code="INVALID_ARGUMENT") == 1
    assert delta("grpc_server_msg_received_total", **rpc) == 3
    assert delta("grpc_server_msg_sent_total", **rpc) == 2
    assert delta("grpc_server_handling_seconds_count", **rpc) == 3
    info = dict(grpc_type="unary", grpc_service=SERVICE, grpc_method="GetModelInfo")
    assert delta("grpc_server_handled_total", **info, grpc_code="OK") == 1
    assert delta("facerecon_stage_seconds_count", stage="network") == 2
    assert delta("facerecon_stage_seconds_count", stage="decode") == 2
    assert delta("facerecon_batch_size_count") == 2
    assert sample(after, "facerecon_queue_depth") == 0
    assert sample(after, "facerecon_model_ready") == 1
    models = [labels for (name, labels) in after if name == "facerecon_model_info"]
    assert len(models) == 1 and dict(models[0])["variant"] == "vrn-tiny"


def test_concurrent_requests_share_forward_passes(reconstructor, astronaut_jpeg):
    with RunningServer(reconstructor, max_batch_size=8, batch_max_wait_ms=50) as server:
        with server.channel() as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            request = build_request(astronaut_jpeg, pose=False)
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                replies = list(pool.map(lambda _: stub.Reconstruct(request, timeout=60), range(8)))
        metrics = server.metrics()
    assert all(r.mesh.glb for r in replies)
    batches = sample(metrics, "facerecon_batch_size_count")
    assert sample(metrics, "facerecon_batch_size_sum") == 8 and batches < 8


def test_a_reply_over_the_send_limit_is_refused_with_a_reason(reconstructor, astronaut_jpeg):
    with RunningServer(reconstructor, max_send_message_bytes=256 << 10) as server:
        with server.channel() as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            request = build_request(astronaut_jpeg, mesh_encodings=("raw", "ply", "obj"))
            with pytest.raises(grpc.RpcError) as caught:
                stub.Reconstruct(request, timeout=60)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "decimate_faces" in caught.value.details()
            small = build_request(astronaut_jpeg, decimate_faces=1000, pose=False)
            assert stub.Reconstruct(small, timeout=60).mesh.glb
