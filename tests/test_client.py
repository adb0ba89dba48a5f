"""The Python client library and the facerecon-client CLI, against a real server."""

from __future__ import annotations

import asyncio
import json
import threading

import grpc
import numpy as np
import pytest
from grpc_harness import RunningServer

from facerecon.reconstructor import Reconstructor
from facerecon_client import (
    AsyncFaceReconClient,
    FaceReconClient,
    bad_request_fields,
    build_request,
    mesh_arrays,
    to_mesh,
)
from facerecon_client.cli import main as cli_main
from facerecon_client.retry import RetryPolicy

FAST_RETRY = RetryPolicy(attempts=20, initial_backoff_s=0.01, max_backoff_s=0.1)


@pytest.fixture(scope="module")
def reconstructor(tiny_weights) -> Reconstructor:
    return Reconstructor(tiny_weights, device="cpu")


@pytest.fixture(scope="module")
def server(reconstructor):
    with RunningServer(reconstructor) as running:
        yield running


def test_sync_client_round_trip(server, astronaut_jpeg):
    with FaceReconClient(server.target) as client:
        reply = client.reconstruct(
            astronaut_jpeg, request_id="a", mesh_encodings=("raw",), views=[(20, 0)], view_size=32
        )
        mesh = to_mesh(reply)
        arrays = mesh_arrays(reply.mesh.raw)
        assert mesh.vertices.shape == arrays["vertices"].shape and mesh.faces.dtype == np.int32
        np.testing.assert_array_equal(mesh.colors, arrays["colors"])
        assert reply.request_id == "a" and len(reply.views) == 1
        assert client.model_info().model.name == "vrn-tiny"

        with pytest.raises(grpc.RpcError) as caught:
            client.reconstruct(astronaut_jpeg, view_size=4000)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(bad_request_fields(caught.value)) == {"options.view_size"}

        requests = [build_request(astronaut_jpeg, request_id=str(i), pose=False) for i in range(3)]
        replies = list(client.reconstruct_stream(requests, timeout=60))
        assert sorted(r.request_id for r in replies) == ["0", "1", "2"]


def test_async_client_round_trip(server, astronaut_jpeg):
    async def run():
        async with AsyncFaceReconClient(server.target) as client:
            replies = await asyncio.gather(
                *(
                    client.reconstruct(astronaut_jpeg, request_id=str(i), pose=False)
                    for i in range(3)
                )
            )
            info = await client.model_info()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.reconstruct(b"\xff\xd8 truncated jpeg")
            streamed = [
                r
                async for r in client.reconstruct_stream(
                    [build_request(astronaut_jpeg, request_id="s", pose=False)], timeout=60
                )
            ]
        return replies, info, caught.value, streamed

    replies, info, error, streamed = asyncio.run(run())
    assert [r.request_id for r in replies] == ["0", "1", "2"] and all(r.mesh.glb for r in replies)
    assert info.model.name == "vrn-tiny"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "image" in bad_request_fields(error)
    assert [r.request_id for r in streamed] == ["s"] and streamed[0].response.mesh.glb


class SlowWarmup:
    """Keeps the server NOT_SERVING (calls answered UNAVAILABLE) until `release` is set."""

    def __init__(self, inner: Reconstructor):
        self.inner, self.release = inner, threading.Event()

    def warmup(self) -> None:
        assert self.release.wait(30)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_client_retries_unavailable_until_the_server_is_ready(reconstructor, astronaut_jpeg):
    slow = SlowWarmup(reconstructor)
    with RunningServer(slow, wait_ready=False) as server:
        threading.Timer(0.5, slow.release.set).start()
        # ready_timeout_s=0: no health wait first (test_client_ready.py), the retries alone
        with FaceReconClient(server.target, retry=FAST_RETRY, ready_timeout_s=0) as client:
            assert client.reconstruct(astronaut_jpeg, pose=False, timeout=30).mesh.glb
        metrics = server.metrics()
    refused = [
        v
        for (name, labels), v in metrics.items()
        if name == "facerecon_rejected_requests_total" and ("reason", "not_ready") in labels
    ]
    assert refused and refused[0] >= 1  # it was refused at first, then retried


def test_client_does_not_retry_other_errors(reconstructor, astronaut_jpeg):
    with RunningServer(reconstructor) as server:
        with FaceReconClient(server.target, retry=FAST_RETRY) as client:
            with pytest.raises(grpc.RpcError):
                client.reconstruct(b"not a photo")
        metrics = server.metrics()
    started = [
        v
        for (name, labels), v in metrics.items()
        if name == "grpc_server_started_total" and ("grpc_method", "Reconstruct") in labels
    ]
    assert started == [1.0]


def test_cli_reconstructs_photos_one_by_one_and_as_a_stream(
    server, astronaut_jpeg, tmp_path, capsys
):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("one.jpg", "two.jpg"):
        (photos / name).write_bytes(astronaut_jpeg)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")

    out = tmp_path / "out"
    args = f"reconstruct {server.target} {photos} --out {out} --views=-30,30 --size 32 --quiet"
    assert cli_main(args.split()) == 1  # the broken photo fails, the others are written
    assert "broken.jpg: FAILED: INVALID_ARGUMENT: image:" in capsys.readouterr().err
    assert {p.name for p in out.iterdir()} >= {
        "one.glb",
        "one_yaw-30_pitch+0.png",
        "one_yaw+30_pitch+0.png",
        "one.json",
        "two.glb",
    }
    assert json.loads((out / "one.json").read_text())["model"]["name"] == "vrn-tiny"

    batch = tmp_path / "batch"
    one, two = photos / "one.jpg", photos / "two.jpg"
    args = f"reconstruct {server.target} {one} {two} --out {batch} --format ply --views= --frontal"
    assert cli_main([*args.split(), "--batch", "--quiet"]) == 0
    assert {p.name for p in batch.iterdir()} == {
        "one.ply",
        "one_frontal.png",
        "one.json",
        "two.ply",
        "two_frontal.png",
        "two.json",
    }
    assert (batch / "one.ply").read_bytes().startswith(b"ply")


def test_cli_info(server, capsys):
    assert cli_main(["info", server.target]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"]["name"] == "vrn-tiny" and info["limits"]["max_batch_size"] == 4
