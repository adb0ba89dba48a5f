"""Reliability of the gRPC server (issue 19): no INTERNAL under deadlines, auth that fails
closed, malformed messages and every other call counted, a drain that keeps its promise,
unary calls admitted while streams wait, admission by memory cost. Real servers on port 0,
real channels; the slow cases are gated instead of timed so that they stay fast."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_harness import RunningServer, sample
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facerecon.reconstructor import Reconstructor
from facerecon.server import ServerConfig, create_server
from facerecon.server.admission import Admission
from facerecon.server.metrics import ServerMetrics
from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import service_pb2_grpc
from facerecon_client import build_request

SERVICE = "facerecon.v1.FaceReconService"
RECONSTRUCT = f"/{SERVICE}/Reconstruct"
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@pytest.fixture(scope="module")
def reconstructor(tiny_weights) -> Reconstructor:
    return Reconstructor(tiny_weights, device="cpu")


class Gated:
    """A Reconstructor whose prepare() waits for `release` (the work is 'slow' until then)."""

    def __init__(self, inner: Reconstructor):
        self.inner = inner
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def prepare(self, *args, **kwargs):
        self.entered.release()
        assert self.release.wait(30)
        return self.inner.prepare(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def outcome(call) -> grpc.StatusCode:
    try:
        call.result()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def handled_total(metrics: dict) -> float:
    return sum(v for (name, _), v in metrics.items() if name == "grpc_server_handled_total")


def raw_unary(channel: grpc.Channel, method: str = RECONSTRUCT):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


# --- 1. deadlines ---------------------------------------------------------------------------


def test_a_deadline_storm_gives_no_internal(reconstructor, astronaut_jpeg):
    """Short deadlines used to leave cancelled faces in a batcher queue sized max_inflight
    while their slots were given back: QueueFull -> INTERNAL."""
    request = build_request(astronaut_jpeg, views=[(0, 0)], view_size=64, pose=False)
    codes: list[grpc.StatusCode] = []
    with RunningServer(reconstructor, max_inflight=2, workers=2) as server:
        with server.channel() as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)

            def client(_: int) -> list[grpc.StatusCode]:
                return [
                    outcome(stub.Reconstruct.future(request, timeout=0.02 + 0.01 * (i % 4)))
                    for i in range(12)
                ]

            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                for found in pool.map(client, range(6)):
                    codes += found
            end = time.monotonic() + 30  # abandoned work ends, its slots come back
            while sample(server.metrics(), "facerecon_inflight_requests") and (
                time.monotonic() < end
            ):
                time.sleep(0.05)
            assert stub.Reconstruct(request, timeout=60).mesh.glb
        metrics = server.metrics()
    assert not SERVER_FAULTS & set(codes), codes
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
    assert sample(metrics, "facerecon_inflight_requests") == 0
    assert sample(metrics, "facerecon_memory_reserved_bytes") == 0


def test_a_cancelled_face_keeps_its_slot_until_the_batcher_drops_it():
    """Unit level: the slot of a call whose face still sits in the batcher's queue is not
    handed to another request before the batcher lets go of that face."""
    from facerecon.server.batcher import DynamicBatcher

    gate = threading.Event()

    def predict(items):
        assert gate.wait(10)
        return list(items)

    async def scenario():
        metrics = ServerMetrics()
        admission = Admission(1, 1 << 30, metrics)
        batcher = DynamicBatcher(predict, 1, 0.0, capacity=1, metrics=metrics)
        batcher.start()
        busy = admission.try_enter(1)
        first = asyncio.create_task(batcher.submit("busy", busy.hold()))  # holds the thread
        await asyncio.sleep(0.05)
        busy.close()
        slot = admission.try_enter(1)
        assert isinstance(slot, str)  # the one slot is still held by the busy face
        gate.set()
        await first
        await asyncio.sleep(0.01)
        slot = admission.try_enter(1)
        queued = asyncio.create_task(batcher.submit("gone", slot.hold()))
        await asyncio.sleep(0)
        queued.cancel()
        slot.close()
        # the cancelled face is dropped at once (the network thread is idle): slot free
        for _ in range(100):
            await asyncio.sleep(0.01)
            if admission.count == 0:
                break
        assert admission.count == 0 and admission.used == 0
        assert await batcher.stop(5)

    asyncio.run(scenario())


# --- 2. auth fails closed ---------------------------------------------------------------------


@pytest.mark.parametrize("tokens", ["", ",", " ", " , ,"])
def test_an_empty_token_list_is_refused_at_start(tokens):
    with pytest.raises(ValueError, match="no token"):
        ServerConfig(auth_tokens=tokens)
    with pytest.raises(ValueError, match="no token"):  # also from the environment (a Secret)
        ServerConfig.from_args([], {"FACERECON_AUTH_TOKENS": tokens})


@pytest.mark.parametrize("content", ["", "\n\n", "   \n \t\n"])
def test_an_empty_token_file_is_refused_at_start(tmp_path, content):
    path = tmp_path / "tokens"
    path.write_text(content)
    config = ServerConfig(address="127.0.0.1:0", metrics_port=None, auth_tokens_file=path)

    async def start():
        create_server(config)

    with pytest.raises(ValueError, match="refusing to start without authentication"):
        asyncio.run(start())
    with pytest.raises(ValueError, match="no such file|cannot read"):
        ServerConfig(auth_tokens_file=tmp_path / "absent").tokens()
    with pytest.raises(SystemExit):  # an empty path set in the environment
        ServerConfig.from_args([], {"FACERECON_AUTH_TOKENS_FILE": ""})


def test_the_server_command_exits_with_a_clear_error_on_empty_tokens(tmp_path, tiny_weights):
    path = tmp_path / "tokens"
    path.write_text("\n")
    command = [sys.executable, "-m", "facerecon.server", "--address", "127.0.0.1:0",
               "--metrics-port", "", "--device", "cpu", "--weights", str(tiny_weights),
               "--auth-tokens-file", str(path)]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("the server started without authentication") from None
    assert done.returncode == 2
    (entry,) = [json.loads(line) for line in done.stderr.splitlines() if "cannot start" in line]
    assert "refusing to start without authentication" in entry["error"]


def test_every_stderr_line_is_json():
    """Python warnings and what native code (gRPC's core) writes to fd 2 come out as JSON."""
    script = (
        "import os, time, warnings, logging\n"
        "from facerecon.server.logs import configure_logging\n"
        "configure_logging('INFO', capture_stderr=True)\n"
        "warnings.warn('a python warning')\n"
        "os.write(2, b'E1206 12:00:00.0 1 ssl_transport_security.cc:1] Handshake failed\\n')\n"
        "logging.getLogger('x').info('structured')\n"
        "time.sleep(0.3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]  # raises on non-JSON
    messages = " ".join(e["msg"] for e in entries)
    assert "a python warning" in messages and "Handshake failed" in messages
    assert "structured" in messages


def test_duplicate_authorization_headers_are_refused(reconstructor, tmp_path):
    with RunningServer(reconstructor, auth_tokens="good") as server, server.channel() as ch:
        stub = service_pb2_grpc.FaceReconServiceStub(ch)
        one = [("authorization", "Bearer good")]
        assert stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=one, timeout=10).model.name
        for headers in (
            [("authorization", "Bearer wrong"), ("authorization", "Bearer good")],
            [("authorization", "Bearer good"), ("authorization", "Bearer good")],
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=headers, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "more than one" in caught.value.details()


# --- 4 and 7. malformed messages, every call counted ---------------------------------------


def test_malformed_messages_are_invalid_argument_and_every_call_is_counted(reconstructor):
    sent: list[grpc.StatusCode] = []
    with RunningServer(reconstructor, max_receive_message_bytes=1 << 20) as server:
        with server.channel() as channel:
            for payload in (b"\xff\xff\xff", b"\x0a\x02\xff\xfe", b"\x12\x05ab"):
                with pytest.raises(grpc.RpcError) as caught:
                    raw_unary(channel)(payload, timeout=10)
                sent.append(caught.value.code())
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "not a valid facerecon.v1.ReconstructRequest" in caught.value.details()
                assert "Error" not in caught.value.details()  # no Python exception shown
            # a malformed message inside a stream ends the stream with INVALID_ARGUMENT
            stream = channel.stream_stream(
                f"/{SERVICE}/ReconstructStream",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.RpcError) as caught:
                list(stream(iter([b"\x0a\x03\xff\xfe\xfd"]), timeout=10))
            sent.append(caught.value.code())
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # over the size limit: refused by gRPC, still counted
            with pytest.raises(grpc.RpcError) as caught:
                raw_unary(channel)(b"\x12\x80\x80\x80\x01" + b"x" * (2 << 20), timeout=10)
            sent.append(caught.value.code())
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # an unknown method
            with pytest.raises(grpc.RpcError) as caught:
                raw_unary(channel, f"/{SERVICE}/NoSuchMethod")(b"", timeout=10)
            sent.append(caught.value.code())
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            # a good call
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            sent.append(grpc.StatusCode.OK)
        time.sleep(0.2)  # the last call's outcome is recorded after the client has it
        metrics = server.metrics()
    assert handled_total(metrics) == len(sent)
    rpc = dict(grpc_type="unary", grpc_service=SERVICE, grpc_method="Reconstruct")
    assert sample(metrics, "grpc_server_handled_total", **rpc, grpc_code="INVALID_ARGUMENT") == 3
    assert sample(metrics, "grpc_server_handled_total", **rpc, grpc_code="RESOURCE_EXHAUSTED") == 1
    unknown = dict(grpc_type="unknown", grpc_service="unknown", grpc_method="unknown")
    assert sample(metrics, "grpc_server_handled_total", **unknown, grpc_code="UNIMPLEMENTED") == 1
    assert sample(metrics, "facerecon_rejected_requests_total", reason="malformed") == 4
    assert sample(metrics, "facerecon_rejected_requests_total", reason="message_too_large") == 1


def test_calls_whose_deadline_passed_before_the_handler_are_counted(reconstructor):
    with RunningServer(reconstructor) as server, server.channel() as channel:
        stub = service_pb2_grpc.FaceReconServiceStub(channel)
        calls = 40
        for _ in range(calls):
            try:
                stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=0.0005)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        end = time.monotonic() + 10
        while handled_total(server.metrics()) < calls and time.monotonic() < end:
            time.sleep(0.05)
        metrics = server.metrics()
    started = sum(v for (n, _), v in metrics.items() if n == "grpc_server_started_total")
    # every call that reached the server is counted as finished, once
    assert handled_total(metrics) == started <= calls


# --- 5. drain -----------------------------------------------------------------------------


def test_drain_with_an_open_watch_ends_within_the_grace_and_probes_see_not_serving(
    reconstructor,
):
    with RunningServer(reconstructor, drain_notice_s=1.0) as server:
        with server.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=60)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            start = time.monotonic()
            stopping = asyncio.run_coroutine_threadsafe(server.server.stop(4.0), server.loop)
            seen = set()
            while not stopping.done():
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    seen.add(reply.status)
                except grpc.RpcError:
                    break
                time.sleep(0.05)
            assert stopping.result(10) is True
            elapsed = time.monotonic() - start
            statuses = [r.status for r in watch]  # the watch ends instead of holding the server
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
    assert health_pb2.HealthCheckResponse.SERVING not in seen
    assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING]
    assert 1.0 <= elapsed < 3.0, elapsed  # the notice, then out at once: not the grace of 4 s


def test_cpu_work_past_the_grace_does_not_hold_the_stop(reconstructor, astronaut_jpeg):
    gated = Gated(reconstructor)
    with RunningServer(gated, drain_notice_s=0.0) as server, server.channel() as channel:
        stub = service_pb2_grpc.FaceReconServiceStub(channel)
        call = stub.Reconstruct.future(build_request(astronaut_jpeg), timeout=60)
        assert gated.entered.acquire(timeout=10)
        start = time.monotonic()
        try:
            assert server.run(server.server.stop(1.0)) is False  # the job is still running
            assert time.monotonic() - start < 2.0
        finally:
            gated.release.set()
        assert outcome(call) != grpc.StatusCode.OK


# --- 6. unary calls while streams wait ------------------------------------------------------


def test_a_unary_call_is_admitted_while_streams_wait(reconstructor, astronaut_jpeg):
    gated = Gated(reconstructor)
    request = build_request(astronaut_jpeg, pose=False)
    with RunningServer(gated, max_inflight=4, max_stream_inflight=8) as server:
        with server.channel() as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            messages = [pb.ReconstructStreamRequest(request=request) for _ in range(8)]
            stream = stub.ReconstructStream(iter(messages), timeout=60)
            replies: list = []
            reader = threading.Thread(target=lambda: replies.extend(stream), daemon=True)
            reader.start()
            end = time.monotonic() + 10  # streams hold what they may (3 of 4); others wait
            while sample(server.metrics(), "facerecon_inflight_requests") < 3:
                assert time.monotonic() < end
                time.sleep(0.02)
            unary = stub.Reconstruct.future(request, timeout=60)
            end = time.monotonic() + 10
            while sample(server.metrics(), "facerecon_inflight_requests") < 4:
                assert time.monotonic() < end and not unary.done(), outcome(unary)
                time.sleep(0.02)
            gated.release.set()
            assert outcome(unary) == grpc.StatusCode.OK
            reader.join(60)
        metrics = server.metrics()
    assert len(replies) == 8 and all(r.HasField("response") for r in replies)
    assert sample(metrics, "facerecon_rejected_requests_total", reason="inflight_limit") == 0


def test_streams_may_not_take_the_slots_kept_for_unary_calls():
    admission = Admission(8, 1 << 30, ServerMetrics())
    assert admission.stream_limit == 6
    assert Admission(2, 1, ServerMetrics()).stream_limit == 1
    assert Admission(1, 1, ServerMetrics()).stream_limit == 1


# --- 3. admission by cost -------------------------------------------------------------------


def test_requests_are_charged_by_cost_against_the_memory_budget(reconstructor, astronaut_jpeg):
    from facerecon.server.convert import parse_request
    from facerecon.server.cost import request_cost

    small = build_request(astronaut_jpeg, pose=False)
    big = build_request(astronaut_jpeg, views=[(y, 0) for y in range(-80, 80, 10)], view_size=1024)
    small_cost = request_cost(parse_request(small, ""), 40_000_000)
    big_cost = request_cost(parse_request(big, ""), 40_000_000)
    assert big_cost > 16 * 1024 * 1024 * 50 > small_cost
    budget_mb = (big_cost >> 20) - 1  # the big request alone is over it
    gated = Gated(reconstructor)
    with RunningServer(gated, memory_budget_mb=budget_mb, max_inflight=64) as server:
        with server.channel() as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            assert info.limits.memory_budget_bytes == budget_mb << 20
            with pytest.raises(grpc.RpcError) as caught:
                stub.Reconstruct(big, timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "memory budget" in caught.value.details()
            assert "fewer or smaller views" in caught.value.details()
            # small requests fill the budget; the next one is refused naming it
            fits = (budget_mb << 20) // small_cost
            calls = [stub.Reconstruct.future(small, timeout=60) for _ in range(fits + 3)]
            end = time.monotonic() + 10
            while sum(c.done() for c in calls) < 3:
                assert time.monotonic() < end
                time.sleep(0.02)
            refused = [c for c in calls if c.done()]
            assert all(c.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED for c in refused)
            assert "memory budget" in refused[0].exception().details()
            metrics = server.metrics()
            assert sample(metrics, "facerecon_memory_reserved_bytes") == fits * small_cost
            assert sample(metrics, "facerecon_memory_budget_bytes") == budget_mb << 20
            gated.release.set()
            assert all(outcome(c) == grpc.StatusCode.OK for c in calls if c not in refused)
        metrics = server.metrics()
    assert sample(metrics, "facerecon_rejected_requests_total", reason="memory_budget") == 3
    assert sample(metrics, "facerecon_rejected_requests_total", reason="request_over_budget") == 1
    assert sample(metrics, "facerecon_memory_reserved_bytes") == 0


def test_the_budget_comes_from_the_cgroup_limit_or_the_flag(tmp_path, monkeypatch):
    from facerecon.server import memory

    (tmp_path / "memory.max").write_text("3221225472\n")
    assert memory.cgroup_memory_limit(tmp_path) == 3 << 30
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.cgroup_memory_limit(tmp_path) is None
    (tmp_path / "memory.max").unlink()
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory.cgroup_memory_limit(tmp_path) is None  # cgroup v1: no limit
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(2 << 30))
    assert memory.cgroup_memory_limit(tmp_path) == 2 << 30

    assert memory.memory_budget(700, 0.8, 1 << 30) == (700 << 20, "--memory-budget-mb")
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: 4 << 30)
    budget, source = memory.memory_budget(None, 0.75, 1 << 30)
    assert (budget, source) == ((3 << 30) - (1 << 30), "cgroup memory limit")
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: None)
    assert memory.memory_budget(None, 0.5, 0)[1] == "physical memory"
    assert 0 < memory.rss_bytes() < memory.physical_memory()


# --- 8. smaller items -----------------------------------------------------------------------


def test_a_tls_key_that_does_not_match_its_certificate_is_named(tmp_path):
    from test_k8s import _self_signed_localhost

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    cert, _ = _self_signed_localhost(first)
    _, other_key = _self_signed_localhost(second)
    config = ServerConfig(address="127.0.0.1:0", metrics_port=None, tls_cert=cert,
                          tls_key=other_key)  # fmt: skip

    async def start():
        create_server(config)

    with pytest.raises(ValueError, match="does not match the certificate"):
        asyncio.run(start())


def test_metrics_bind_to_loopback_by_default():
    assert ServerConfig().metrics_address == "127.0.0.1"
    assert ServerConfig.from_args([], {}).metrics_address == "127.0.0.1"


def test_the_contract_names_every_accepted_image_format():
    from pathlib import Path

    from facerecon.image import FORMATS

    proto = Path(__file__).resolve().parents[1] / "proto/facerecon/v1/service.proto"
    text = proto.read_text()
    start = text.index("bytes image = 2;")
    comment = text[text.rindex("string request_id = 1;", 0, start) : start]
    for name in FORMATS:
        assert {"WEBP": "WebP"}.get(name, name) in comment, name


def test_health_polls_are_counted_but_not_logged(reconstructor, caplog):
    """Kubernetes probes and clients waiting for readiness poll health every second: an
    access line each would drown the log. They are counted; other calls are logged."""
    caplog.set_level(logging.INFO, logger="facerecon.access")
    with RunningServer(reconstructor) as server:
        with server.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(3):
                health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            service_pb2_grpc.FaceReconServiceStub(channel).GetModelInfo(
                pb.GetModelInfoRequest(), timeout=10
            )
        metrics = server.metrics()
    methods = [r.fields["method"] for r in caplog.records if r.name == "facerecon.access"]
    assert methods == ["/facerecon.v1.FaceReconService/GetModelInfo"]
    assert sample(metrics, "grpc_server_handled_total", grpc_service="grpc.health.v1.Health",
                  grpc_method="Check", grpc_code="OK", grpc_type="unary") == 3  # fmt: skip
