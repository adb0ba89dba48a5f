"""Prometheus metrics of one server, on their own registry, served at http://HOST:PORT/metrics.

Standard gRPC server families, with the names and labels of go-grpc-prometheus /
py-grpc-prometheus so that stock Grafana dashboards work. Labels: grpc_type ("unary",
"bidi_stream", "server_stream"), grpc_service ("facerecon.v1.FaceReconService",
"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection") and grpc_method
("Reconstruct", "ReconstructStream", "GetModelInfo", "Check", ...); calls to methods the server
does not have are counted with all three labels "unknown" (clients cannot add label values):

- grpc_server_started_total          counter    calls started
- grpc_server_handled_total          counter    calls finished; extra label grpc_code ("OK",
                                                "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", ...)
- grpc_server_msg_received_total     counter    request messages received
- grpc_server_msg_sent_total         counter    response messages sent
- grpc_server_handling_seconds       histogram  call duration, start to final status

facerecon families:

- facerecon_stage_seconds{stage}     histogram  seconds per reconstruction stage; stage =
                                                decode, crop, queue, network, mesh, pose,
                                                render, encode
- facerecon_batch_size               histogram  faces per forward pass of the network
- facerecon_queue_depth              gauge      faces waiting for the network
- facerecon_inflight_requests        gauge      requests being processed, all calls
- facerecon_rejected_requests_total{reason}
                                     counter    requests refused before any work; reason =
                                                inflight_limit, memory_budget (the budget is
                                                taken), request_over_budget (one request over
                                                the whole budget), not_ready, shutting_down,
                                                unauthenticated, permission_denied,
                                                malformed (undecodable message),
                                                message_too_large, unknown_method
- facerecon_memory_budget_bytes      gauge      memory requests in progress may take together
- facerecon_memory_reserved_bytes    gauge      estimated memory of the requests in progress
- facerecon_model_info{variant,version,sha256,device}
                                     gauge      always 1: the model being served
- facerecon_model_ready              gauge      1 while the model is loaded, warm and serving
- facerecon_gpu_memory_bytes{device,kind}
                                     gauge      CUDA memory; kind = allocated, reserved,
                                                total (the device's capacity); present only
                                                when serving on CUDA

Counters are exposed with the `_total` suffix, histograms as `_bucket`, `_sum`, `_count`.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# Calls last from ~1 ms (health) to seconds (a big photo on a busy CPU).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ServerMetrics:
    """Every metric the server exports, registered on a private registry."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server.", GRPC_LABELS, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server.",
            (*GRPC_LABELS, "grpc_code"),
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received", "RPC messages received.", GRPC_LABELS, registry=registry
        )
        self.sent = Counter(
            "grpc_server_msg_sent", "RPC messages sent.", GRPC_LABELS, registry=registry
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "RPC handling time.",
            GRPC_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage = Histogram(
            "facerecon_stage_seconds",
            "Time per reconstruction stage.",
            ("stage",),
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "facerecon_batch_size",
            "Faces per forward pass.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "facerecon_queue_depth", "Faces waiting for the network.", registry=registry
        )
        self.inflight = Gauge(
            "facerecon_inflight_requests", "Requests being processed.", registry=registry
        )
        self.rejected = Counter(
            "facerecon_rejected_requests",
            "Requests refused before work.",
            ("reason",),
            registry=registry,
        )
        self.memory_budget = Gauge(
            "facerecon_memory_budget_bytes",
            "Memory the requests in progress may take together (estimated per request).",
            registry=registry,
        )
        self.memory_reserved = Gauge(
            "facerecon_memory_reserved_bytes",
            "Estimated memory of the requests in progress.",
            registry=registry,
        )
        self.model_info = Gauge(
            "facerecon_model_info",
            "The model being served (always 1).",
            ("variant", "version", "sha256", "device"),
            registry=registry,
        )
        self.model_ready = Gauge(
            "facerecon_model_ready", "1 once the model is loaded and warm.", registry=registry
        )
        self._http: Any = None

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            if stage != "total":
                self.stage.labels(stage).observe(ms / 1000.0)

    def watch_gpu_memory(self, device: str) -> None:
        """Export CUDA memory of `device` at every scrape (call once, only on CUDA)."""
        self.registry.register(_GpuMemoryCollector(device))

    def serve_http(self, port: int, address: str = "127.0.0.1") -> int:
        """Start /metrics in a daemon thread; returns the bound port."""
        self._http, _thread = start_http_server(port, addr=address, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _GpuMemoryCollector:
    def __init__(self, device: str):
        self.device = device

    def collect(self):
        import torch

        family = GaugeMetricFamily(
            "facerecon_gpu_memory_bytes", "CUDA memory in use.", labels=("device", "kind")
        )
        family.add_metric((self.device, "allocated"), torch.cuda.memory_allocated(self.device))
        family.add_metric((self.device, "reserved"), torch.cuda.memory_reserved(self.device))
        # The capacity, so that alerts can use a ratio whatever the GPU model.
        total = torch.cuda.get_device_properties(self.device).total_memory
        family.add_metric((self.device, "total"), total)
        yield family

    def describe(self):
        return []


def split_method(full_method: str) -> tuple[str, str]:
    """'/facerecon.v1.FaceReconService/Reconstruct' -> (service, method)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def grpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


class CallStats:
    """Counts one call's messages and reports it to the metrics when it ends."""

    def __init__(self, metrics: ServerMetrics, kind: str, full_method: str):
        self.metrics = metrics
        self.labels = (kind, *split_method(full_method))
        self.start = time.perf_counter()
        self.messages_in = self.messages_out = 0
        metrics.started.labels(*self.labels).inc()

    def received(self) -> None:
        self.messages_in += 1
        self.metrics.received.labels(*self.labels).inc()

    def sent(self) -> None:
        self.messages_out += 1
        self.metrics.sent.labels(*self.labels).inc()

    def finished(self, code: grpc.StatusCode) -> float:
        """Record the outcome; returns the call's duration in seconds."""
        elapsed = time.perf_counter() - self.start
        self.metrics.handled.labels(*self.labels, code.name).inc()
        self.metrics.handling.labels(*self.labels).observe(elapsed)
        return elapsed
