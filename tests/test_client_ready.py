"""Clients wait (bounded) for a server whose model is still loading, instead of failing the
first call; `facerecon-client` takes `--views -60,0,60` and prints what the server notes.
Real servers on loopback ports, real channels."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_harness import RunningServer
from PIL import Image

from facerecon.reconstructor import NO_FACE_FOUND, Reconstructor
from facerecon_client import AsyncFaceReconClient, FaceReconClient, ServerNotReady
from facerecon_client.cli import main as cli_main

LOADING_S = 3.0  # longer than the client's own retries of UNAVAILABLE last (~1.5 s)


class SlowWarmup:
    """Keeps the server NOT_SERVING (the API answers UNAVAILABLE "model is loading") until
    `release` is set."""

    def __init__(self, inner: Reconstructor):
        self.inner, self.release = inner, threading.Event()

    def warmup(self) -> None:
        assert self.release.wait(30)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def reconstructor(tiny_weights) -> Reconstructor:
    return Reconstructor(tiny_weights, device="cpu")


@pytest.fixture
def loading(reconstructor):
    """A server whose model loads for LOADING_S seconds after the test starts."""
    slow = SlowWarmup(reconstructor)
    with RunningServer(slow, wait_ready=False) as server:
        timer = threading.Timer(LOADING_S, slow.release.set)
        timer.start()
        yield server
        timer.cancel()
        slow.release.set()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_first_call_waits_while_the_model_loads(loading, astronaut_jpeg):
    told: list[str] = []
    start = time.monotonic()
    with FaceReconClient(loading.target, on_wait=told.append) as client:  # default settings
        reply = client.reconstruct(astronaut_jpeg, pose=False, timeout=30)
    assert reply.mesh.glb and time.monotonic() - start >= LOADING_S - 0.5
    assert len(told) == 1 and "model is loading" in told[0] and loading.target in told[0]


def test_the_async_client_waits_too(loading):
    async def run():
        async with AsyncFaceReconClient(loading.target) as client:
            return await client.model_info()

    assert asyncio.run(run()).model.name == "vrn-tiny"


def test_the_wait_is_bounded_and_says_why(loading, astronaut_jpeg):
    start = time.monotonic()
    with FaceReconClient(loading.target, ready_timeout_s=0.5) as client:
        with pytest.raises(ServerNotReady, match="not ready after 0.5 s.*model is loading"):
            client.reconstruct(astronaut_jpeg)
    assert time.monotonic() - start < 2.5


def test_an_unreachable_server_is_not_waited_for():
    """Nothing listening (or a TLS handshake refused: test_server_security.py) is not a server
    loading its model: the call fails at once with gRPC's own error, as before."""
    start = time.monotonic()
    with FaceReconClient(f"127.0.0.1:{closed_port()}") as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.model_info()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - start < 15  # the call's own retries, not the 60 s wait


def test_cli_waits_or_gives_up_as_told(loading, astronaut_jpeg, tmp_path, capsys):
    photo = tmp_path / "face.jpg"
    photo.write_bytes(astronaut_jpeg)
    argv = ["reconstruct", loading.target, str(photo), "--out", str(tmp_path / "out"), "--quiet"]
    assert cli_main([*argv, "--ready-timeout", "0.3"]) == 1
    assert "was not ready after" in capsys.readouterr().err
    assert cli_main(["wait", loading.target]) == 0
    assert capsys.readouterr().out.strip() == f"{loading.target} is serving"
    assert cli_main([*argv, "--views", "-60,0,60", "--size", "32"]) == 0
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"face_yaw-60_pitch+0.png", "face_yaw+0_pitch+0.png", "face_yaw+60_pitch+0.png"} <= (
        written
    )


def test_cli_wait_gives_up_when_nothing_answers(capsys):
    assert cli_main(["wait", f"127.0.0.1:{closed_port()}", "--ready-timeout", "1"]) == 1
    assert "not serving after 1 s" in capsys.readouterr().err


def test_cli_prints_the_servers_notes(reconstructor, tmp_path, capsys):
    photo = tmp_path / "grey.png"
    Image.fromarray(np.full((240, 200, 3), 128, np.uint8)).save(photo)
    with RunningServer(reconstructor) as server:
        argv = ["reconstruct", server.target, str(photo), "--out", str(tmp_path / "out")]
        assert cli_main([*argv, "--views=", "--quiet"]) == 0
    assert f"{photo}: [{NO_FACE_FOUND}]" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "grey.json").read_text())
    assert summary["face_source"] == "FACE_SOURCE_WHOLE_IMAGE"
    assert summary["notes"] == [NO_FACE_FOUND]
