"""A real facerecon gRPC server on a loopback port, run on its own event-loop thread so that
tests can call it through ordinary blocking channels; plus /metrics scraping."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from dataclasses import replace

import grpc
from prometheus_client.parser import text_string_to_metric_families

from facerecon.reconstructor import Reconstructor
from facerecon.server import FaceReconServer, ServerConfig, create_server
from facerecon_client.channel import OPTIONS as CHANNEL_OPTIONS

TEST_CONFIG = ServerConfig(
    address="127.0.0.1:0",
    device="cpu",
    metrics_port=0,
    metrics_address="127.0.0.1",
    workers=2,
    max_inflight=8,
    max_batch_size=4,
    grace_period_s=5.0,
)


class RunningServer:
    """`with RunningServer(reconstructor, max_inflight=2) as server: ... server.target ...`"""

    def __init__(self, reconstructor: Reconstructor | None, wait_ready: bool = True, **config):
        self.config = replace(TEST_CONFIG, **config)
        self.reconstructor = reconstructor
        self.wait_ready = wait_ready
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: FaceReconServer | None = None
        self.port = 0

    def run(self, coroutine, timeout: float = 30.0):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __enter__(self) -> RunningServer:
        self.thread.start()

        async def start() -> None:
            self.server, self.port = create_server(self.config, self.reconstructor)
            await self.server.start()
            if self.wait_ready:
                await self.server.ready()

        self.run(start())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        """A plaintext channel sized like the client library's (replies reach ~10 MB)."""
        return grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.server.metrics_port)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(metrics: dict, name: str, **labels: str) -> float:
    """A sample's value (0 when absent), matching the given labels exactly."""
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)
