"""Assembles the server: gRPC (FaceReconService, health, reflection), interceptors, limits,
the dynamic batcher, the CPU pool and the /metrics endpoint.

    server, port = create_server(config)        # inside a running event loop
    await server.start()                         # health NOT_SERVING until the model is warm
    await server.wait_for_termination()
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from facerecon.reconstructor import Reconstructor, WeightsNotFound
from facerecon.server.auth import BearerTokenInterceptor
from facerecon.server.batcher import DynamicBatcher, join_threads
from facerecon.server.config import ServerConfig
from facerecon.server.memory import memory_budget, rss_bytes
from facerecon.server.metrics import ServerMetrics
from facerecon.server.observe import ObservingInterceptor
from facerecon.server.service import Engine, FaceReconService
from facerecon.server.tls import server_credentials
from facerecon.v1 import service_pb2, service_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["FaceReconService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FaceReconServer:
    """A grpc.aio.Server with the model's lifecycle attached (start, stop, wait).

    `start()` opens the port at once and loads the model in the background; health reports
    NOT_SERVING (and the API answers UNAVAILABLE) until the model is loaded and warmed up.
    """

    def __init__(self, config: ServerConfig, reconstructor: Reconstructor | None = None):
        self.config = config
        self.metrics = ServerMetrics()
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="facerecon-cpu")
        self.service = FaceReconService(config, self.metrics, self.pool)
        self.health = DrainingHealth()
        self.metrics_port: int | None = None
        self.memory_budget: dict[str, object] = {}
        self._reconstructor = reconstructor
        self._batcher: DynamicBatcher | None = None
        self._loading: asyncio.Task | None = None
        self._stopped = asyncio.Event()

        interceptors: list[grpc.aio.ServerInterceptor] = [
            ObservingInterceptor(self.metrics, config.max_receive_message_bytes)
        ]
        tokens = config.tokens()  # ValueError when a token source is set but holds none
        if config.auth_configured():
            interceptors.append(BearerTokenInterceptor(tokens, self.metrics))
        self.grpc = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_receive_message_bytes),
                ("grpc.max_send_message_length", config.max_send_message_bytes),
                # Every call waiting for a slot (streams) holds an HTTP/2 stream: bound them per
                # connection, generously (100 is HTTP/2's recommended minimum).
                ("grpc.max_concurrent_streams", max(100, 4 * config.max_inflight)),
                ("grpc.so_reuseport", 0),
            ],
        )
        service_pb2_grpc.add_FaceReconServiceServicer_to_server(self.service, self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc
        )
        if config.tls_cert is not None:
            credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
            self.port = self.grpc.add_secure_port(config.address, credentials)
        else:
            self.port = self.grpc.add_insecure_port(config.address)
        if self.port == 0:
            raise RuntimeError(f"could not bind {config.address}")
        # Probes that cannot speak TLS (kubelet's) get a plaintext port with the health service
        # alone: the same servicer, so it reports exactly what the API port's health does.
        self.health_grpc: grpc.aio.Server | None = None
        self.health_port: int | None = None
        if config.health_port is not None:
            self.health_grpc = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_grpc)
            address = f"{config.address.rpartition(':')[0]}:{config.health_port}"
            self.health_port = self.health_grpc.add_insecure_port(address)
            if self.health_port == 0:
                raise RuntimeError(f"could not bind {address}")

    async def start(self) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, NOT_SERVING)
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(
                self.config.metrics_port, self.config.metrics_address
            )
        await self.grpc.start()
        if self.health_grpc is not None:
            await self.health_grpc.start()
        self._loading = asyncio.create_task(self._load(), name="load-model")

    async def ready(self) -> None:
        """Wait until the model serves (re-raises a loading failure)."""
        assert self._loading is not None, "start() first"
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        try:
            rec = self._reconstructor
            if rec is None:
                if c.face_model is not None and not c.face_model.is_file():
                    # asked for by name: a typo must not quietly turn registration off
                    raise WeightsNotFound(f"no face model at {c.face_model} (--face-model)")
                rec = await loop.run_in_executor(
                    self.pool,
                    lambda: Reconstructor(
                        c.weights,
                        device=c.device,
                        detector=c.detector,
                        threads=c.threads,
                        face_model=c.face_model,
                        mirror_average=c.mirror_average,
                    ),
                )
            if c.warmup:
                await loop.run_in_executor(self.pool, rec.warmup)
        except Exception:
            log.exception("could not load the model; stopping")
            self._stopped.set()
            raise
        info = rec.info
        self.metrics.model_info.labels(info.variant, info.version, info.sha256, info.device).set(1)
        if info.device.startswith("cuda"):
            self.metrics.watch_gpu_memory(info.device)
        self._batcher = DynamicBatcher(
            rec.predict,
            c.max_batch_size,
            c.batch_max_wait_ms / 1000.0,
            capacity=c.max_inflight,
            metrics=self.metrics,
            incoming=lambda: self.service.preparing,
        )
        self._batcher.start()
        budget, source = memory_budget(c.memory_budget_mb, c.memory_fraction, rss_bytes())
        self.service.admission.budget = budget
        self.memory_budget = {"memory_budget_mb": budget >> 20, "memory_budget_from": source}
        self.service.engine = Engine(rec, self._batcher)
        self.metrics.model_ready.set(1)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, SERVING)
        log.info(
            "serving",
            extra={
                "fields": {
                    "port": self.port,
                    "model": info.variant,
                    "version": info.version,
                    "device": info.device,
                    "registration": rec.face_model is not None,
                    **self.memory_budget,
                }
            },
        )

    async def stop(self, grace: float | None = None) -> bool:
        """Drain and stop within `grace` seconds (default: --grace-period-s).

        Health turns NOT_SERVING at once and new API calls are refused (UNAVAILABLE), while the
        port stays open, so that polling probes see NOT_SERVING, for --drain-notice-s and
        until the requests in progress are done (whichever is later, within the grace). Then
        health watches and idle streams end, the port closes, calls still running get what is
        left of the grace, and the CPU threads are given back. True when everything stopped in
        time; False when CPU work was still running as the grace ran out (the caller should
        then exit the process without waiting for it)."""
        grace = self.config.grace_period_s if grace is None else grace
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        margin = min(1.0, 0.1 * grace)  # for stopping the batcher, the pool and /metrics
        self.service.draining = True
        self.metrics.model_ready.set(0)
        await self.health.enter_graceful_shutdown()
        notice_end = loop.time() + min(self.config.drain_notice_s, 0.5 * grace)
        while loop.time() < end - margin and (
            loop.time() < notice_end or self.service.admission.count > 0
        ):
            await asyncio.sleep(0.02)
        self.health.end_watches()
        self.service.end_streams()
        await self.grpc.stop(max(0.0, end - margin - loop.time()))
        if self.health_grpc is not None:
            await self.health_grpc.stop(0)
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        stopped = True
        if self._batcher is not None:
            stopped = await self._batcher.stop(max(0.0, end - loop.time()))
        self.pool.shutdown(wait=False, cancel_futures=True)
        stopped = await join_threads(self.pool, max(0.0, end - loop.time())) and stopped
        self.metrics.close()
        self._stopped.set()
        if not stopped:
            log.warning("the grace period ended with CPU work still running; it is abandoned")
        return stopped

    async def wait_for_termination(self) -> None:
        """Until `stop()` finishes, or the model failed to load."""
        await self._stopped.wait()
        if self._loading is not None and self._loading.done() and self._loading.exception():
            raise self._loading.exception()


class DrainingHealth(health.aio.HealthServicer):
    """grpc.health.v1 whose Watch streams end when the server drains (`end_watches`), so that
    an open watch cannot hold the process for the whole grace period. Watchers get
    NOT_SERVING first (enter_graceful_shutdown), then the end of the stream."""

    def __init__(self) -> None:
        super().__init__()
        self._watches: set[asyncio.Task] = set()

    async def Watch(self, request, context) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        self._watches.add(watch)
        try:
            await watch
        except asyncio.CancelledError:
            if not watch.cancelled() or not self._gracefully_shutting_down:
                raise  # the client went away (or the call was cancelled): not ours to end
        finally:
            self._watches.discard(watch)
            watch.cancel()

    def end_watches(self) -> None:
        for watch in list(self._watches):
            watch.cancel()


def create_server(
    config: ServerConfig, reconstructor: Reconstructor | None = None
) -> tuple[FaceReconServer, int]:
    """A server bound to `config.address` (port 0 picks a free port) and its port.

    Call inside a running event loop (grpc.aio). `reconstructor` overrides loading the
    weights named in `config` (tests, benchmarks)."""
    server = FaceReconServer(config, reconstructor)
    return server, server.port
