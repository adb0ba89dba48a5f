"""gRPC server under load, on loopback: latency and throughput, overhead, memory drift.

    python -m bench.bench_server [--weights weights/facerecon.pt] [--seconds 20] [--calls 60]

Starts `python -m facerecon.server` as a separate process (the load generator must not share
its GIL) and measures:
- unary and streaming throughput and p50/p95/p99 latency at concurrency 1, 4 and 16, each
  level bounded by --calls and --seconds;
- the server's overhead per call (target <= 5 ms): per call, the server's total minus its
  engine stages, plus the client's latency minus the server's total; and, as a noisier
  cross-check, median gRPC latency minus the median of the same work done in-process
  (prepare, predict, finish, encode, in a worker thread as in the server), interleaved call
  by call; both for the full reply and for a small one;
- server RSS drift over --rss-calls calls after a warm-up (target <= 5 %).
Uses the shipped weights when present, else the tests' tiny slab model. Figures go to
bench/results/server.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from bench.results_io import save
from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import service_pb2_grpc
from facerecon_client import build_request
from facerecon_client.channel import OPTIONS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "facerecon.pt"
REQUEST = dict(mesh_encodings=("glb",), views=[(-30, 0), (30, 0)], view_size=128, pose=True)
# A small reply (~100 KB instead of MBs) separates the fixed cost per call from the cost per byte.
SMALL_REQUEST = dict(mesh_encodings=("glb",), decimate_faces=2000, pose=False)


def photo() -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(data.astronaut()[20:220, 120:320])).save(
        buffer, format="JPEG", quality=90
    )
    return buffer.getvalue()


def weights_path(tmp: Path, requested: Path | None) -> tuple[Path, str]:
    if requested is not None:
        return requested, "given"
    if SHIPPED.is_file():
        return SHIPPED, "shipped"
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp / "tiny.pt"), "vrn-tiny slab (tests/conftest.py)"


class ServerProcess:
    def __init__(self, weights: Path, device: str, extra: list[str]):
        flags = (
            f"--address 127.0.0.1:0 --metrics-port 0 --metrics-address 127.0.0.1 --device {device}"
        )
        command = [
            sys.executable,
            "-m",
            "facerecon.server",
            *flags.split(),
            "--weights",
            str(weights),
        ]
        command += extra
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            self.port = self._wait_listening()
        except BaseException:
            self.process.kill()
            raise
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=OPTIONS)
        self.stub = service_pb2_grpc.FaceReconServiceStub(self.channel)
        end = time.monotonic() + 120
        while True:  # until the model is warm
            try:
                self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
                break
            except grpc.RpcError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)

    def _wait_listening(self) -> int:
        lines: queue.Queue = queue.Queue()
        reader = lambda: [lines.put(line) for line in self.process.stderr]  # noqa: E731
        threading.Thread(target=reader, daemon=True).start()
        end = time.monotonic() + 120
        while time.monotonic() < end:
            try:
                entry = json.loads(lines.get(timeout=1))
            except (queue.Empty, json.JSONDecodeError):
                continue
            if entry.get("msg") == "listening":
                return entry["port"]
        raise RuntimeError("server did not start")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def close(self) -> None:
        self.channel.close()
        self.process.terminate()
        self.process.wait(60)


def percentiles(latencies_s: list[float], elapsed_s: float) -> dict:
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "calls": len(ms),
        "throughput_per_s": round(len(ms) / elapsed_s, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def unary_load(stub, request, concurrency: int, calls: int, seconds: float) -> dict:
    """`concurrency` callers in a closed loop, until `calls` are done or `seconds` pass."""
    latencies: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds
    issued = iter(range(calls))

    def caller() -> None:
        while time.monotonic() < end:
            with lock:
                if next(issued, None) is None:
                    return
            start = time.perf_counter()
            stub.Reconstruct(request, timeout=120)
            with lock:
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(caller) for _ in range(concurrency)]:
            f.result()
    return percentiles(latencies, time.perf_counter() - start)


def stream_load(stub, request, concurrency: int, calls: int, seconds: float) -> dict:
    """One stream keeping `concurrency` requests outstanding."""
    window = threading.Semaphore(concurrency)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    end = time.monotonic() + seconds

    def requests():
        for i in range(calls):
            window.acquire()
            if time.monotonic() > end:
                return
            item = pb.ReconstructRequest()
            item.CopyFrom(request)
            item.request_id = str(i)
            sent[item.request_id] = time.perf_counter()
            yield pb.ReconstructStreamRequest(request=item)

    start = time.perf_counter()
    for reply in stub.ReconstructStream(requests(), timeout=seconds + 120):
        assert reply.HasField("response"), reply.error
        latencies.append(time.perf_counter() - sent[reply.request_id])
        window.release()
    return percentiles(latencies, time.perf_counter() - start)


def overhead(stub, request, image: bytes, weights: Path, device: str, pairs: int) -> dict:
    """What gRPC and the server add to the engine's work, per call (see the module doc)."""
    from facerecon.reconstructor import Reconstructor
    from facerecon.server import convert

    rec = Reconstructor(weights, device=device)
    rec.warmup()
    parsed = convert.parse_request(request, "bench")

    def work() -> None:
        face = rec.prepare(image, parsed.face_box, parsed.landmarks)
        (volume,) = rec.predict([face])
        convert.build_response(rec.finish(face, volume, parsed.options), parsed)

    # In a worker thread, as in the server: on a busy machine torch's intra-op threads called
    # from the main thread were seen to run several times slower.
    thread = ThreadPoolExecutor(1)
    bare = lambda: thread.submit(work).result()  # noqa: E731

    def timed(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    served, local, in_server, transport = [], [], [], []
    for _ in range(pairs):
        local.append(timed(bare))
        start = time.perf_counter()
        reply = stub.Reconstruct(request, timeout=120)
        served.append(time.perf_counter() - start)
        total_ms = reply.timings_ms["total"]
        stages_ms = sum(v for k, v in reply.timings_ms.items() if k not in ("total", "queue"))
        in_server.append(total_ms - stages_ms)
        transport.append(served[-1] * 1000.0 - total_ms)
    thread.shutdown()
    med = statistics.median
    return {
        "pairs": pairs,
        "reply_bytes": reply.ByteSize(),
        # Measured per call, so immune to how loaded the machine is: the server's share is
        # (total - engine stages: parsing, queue wait, thread hops) + (client latency - total:
        # serialisation, HTTP/2, loopback).
        "in_server_overhead_p50_ms": round(med(in_server), 2),
        "transport_p50_ms": round(med(transport), 2),
        "overhead_per_call_p50_ms": round(med(np.add(in_server, transport)), 2),
        # Difference of medians, interleaved call by call: noisy on a shared CPU.
        "grpc_call_p50_ms": round(med(served) * 1000.0, 2),
        "in_process_p50_ms": round(med(local) * 1000.0, 2),
        "difference_of_medians_ms": round((med(served) - med(local)) * 1000.0, 2),
    }


def rss_drift(server: ServerProcess, request, calls: int, warmup: int) -> dict:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: server.stub.Reconstruct(request, timeout=120), range(warmup)))
        before = server.rss_bytes()
        samples = []
        for chunk in range(0, calls, 100):
            n = min(100, calls - chunk)
            list(pool.map(lambda _: server.stub.Reconstruct(request, timeout=120), range(n)))
            samples.append(server.rss_bytes())
    after = samples[-1]
    return {
        "calls": calls,
        "warmup_calls": warmup,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "rss_every_100_calls_mib": [round(s / 2**20, 1) for s in samples],
        "drift_percent": round(100.0 * (after - before) / before, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--calls", type=int, default=48, help="most calls per load level")
    parser.add_argument("--seconds", type=float, default=20.0, help="longest time per level")
    parser.add_argument("--overhead-pairs", type=int, default=30)
    parser.add_argument("--rss-calls", type=int, default=1000)
    args = parser.parse_args()

    image = photo()
    request = build_request(image, **REQUEST)
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        weights, source = weights_path(Path(tmp), args.weights)
        extra = [
            "--max-inflight",
            str(max(8, 2 * max(levels))),
            "--max-stream-inflight",
            str(max(levels)),
        ]
        server = ServerProcess(weights, args.device, extra)
        try:
            info = server.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            figures = {
                "model": {
                    "variant": info.model.name,
                    "version": info.model.version,
                    "device": info.device,
                    "weights": source,
                },
                "image": "astronaut 200x200 JPEG",
                "request": REQUEST,
                "small_request": SMALL_REQUEST,
                "server_cpu_threads": os.cpu_count(),
                "overhead": {
                    name: overhead(
                        server.stub,
                        build_request(image, **options),
                        image,
                        weights,
                        args.device,
                        args.overhead_pairs,
                    )
                    for name, options in (("small_reply", SMALL_REQUEST), ("full_reply", REQUEST))
                },
                "unary": {},
                "stream": {},
            }
            for c in levels:
                figures["unary"][str(c)] = unary_load(
                    server.stub, request, c, args.calls, args.seconds
                )
                figures["stream"][str(c)] = stream_load(
                    server.stub, request, c, args.calls, args.seconds
                )
                print(c, figures["unary"][str(c)], figures["stream"][str(c)], file=sys.stderr)
            figures["rss"] = rss_drift(server, request, args.rss_calls, warmup=50)
        finally:
            server.close()
    save("server", figures)


if __name__ == "__main__":
    main()
