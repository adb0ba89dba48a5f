"""SIGTERM under load: `python -m facerecon.server` drains in-flight calls, then exits 0."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import grpc
from grpc_harness import sample, scrape
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facerecon.v1 import service_pb2_grpc
from facerecon_client import build_request
from facerecon_client.channel import OPTIONS


def start_server(weights) -> tuple[subprocess.Popen, dict, queue.Queue]:
    command = [
        sys.executable,
        "-m",
        "facerecon.server",
        "--address",
        "127.0.0.1:0",
        "--metrics-port",
        "0",
        "--metrics-address",
        "127.0.0.1",
        "--device",
        "cpu",
        "--weights",
        str(weights),
        "--max-inflight",
        "16",
        "--workers",
        "2",
        "--grace-period-s",
        "60",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            entry = json.loads(lines.get(timeout=end - time.monotonic()))
        except (queue.Empty, json.JSONDecodeError):
            continue
        if entry.get("msg") == "listening":
            return process, entry, lines
    process.kill()
    raise AssertionError("the server did not start listening")


def test_sigterm_drains_in_flight_calls(tiny_weights, astronaut_jpeg):
    process, listening, lines = start_server(tiny_weights)
    try:
        target = f"127.0.0.1:{listening['port']}"
        with grpc.insecure_channel(target, options=OPTIONS) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            serving = health_pb2.HealthCheckResponse.SERVING
            end = time.monotonic() + 60
            while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != serving:
                assert time.monotonic() < end, "the model never became ready"
                time.sleep(0.1)

            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            request = build_request(
                astronaut_jpeg, views=[(y, 0) for y in (-60, -30, 30, 60)], view_size=512
            )
            calls = [stub.Reconstruct.future(request, timeout=120) for _ in range(8)]
            started = dict(
                grpc_type="unary",
                grpc_service="facerecon.v1.FaceReconService",
                grpc_method="Reconstruct",
            )
            end = time.monotonic() + 30  # until all eight have reached the server
            while (
                sample(
                    metrics := scrape(listening["metrics_port"]),
                    "grpc_server_started_total",
                    **started,
                )
                < 8
            ):
                assert time.monotonic() < end, "the calls never reached the server"
                time.sleep(0.02)
            assert sample(metrics, "facerecon_inflight_requests") > 0, "nothing left to drain"

            process.send_signal(signal.SIGTERM)
            assert all(call.result().mesh.glb for call in calls)  # drained, none dropped
            # Once draining, new calls are refused (not served, not queued).
            late = build_request(astronaut_jpeg)
            try:
                stub.Reconstruct(late, timeout=5)
                raise AssertionError("a call after SIGTERM was served")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    messages = []
    while not lines.empty():
        messages.append(json.loads(lines.get()).get("msg"))
    assert "shutting down" in messages
