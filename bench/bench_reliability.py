"""Reliability of the gRPC server under hostile-but-legitimate use, on loopback only.

    python -m bench.bench_reliability [--weights W] [--quick] [--fuzz N] [--only NAME ...]

Starts `python -m facerecon.server` as a separate process on 127.0.0.1 (port 0, /metrics on
127.0.0.1) and runs, each bounded in calls and time:

- bad_input: a corpus of bad requests (empty, random, truncated, decompression bombs, odd
  formats and modes, bad boxes, landmarks and options, malformed protobuf, invalid UTF-8,
  oversize messages, unknown methods), by unary calls and in streams;
- deadline_storm: many clients, deadlines of 5 ms to 2 s (most shorter than a call);
- overload: 10x the server's capacity (--max-inflight) at once, unary calls and streams mixed;
- memory: concurrent heavy requests (8 MP, 9 views at 1024 px, four encodings) against
  --memory-budget-mb 2400, then (memory_worst_case) three concurrent worst-case-but-legal
  ones (40 MP, 17 views at 1024 px, four encodings; registration needs a face model and is
  left out) against a budget of 2.2 of them: RSS over the idle baseline must stay within the
  budget;
- drain: SIGTERM to a server under load: in-flight calls complete OK, later calls get
  UNAVAILABLE, the process exits within --grace-period-s;
- fuzz: >= 100,000 mutated images (bit flips, byte stores, truncations, splices, header
  sizes) through the decode/prepare path in-process: only InputError may come out.

Per test it reports the calls sent, outcomes by status code, INTERNAL/UNKNOWN count, hung
calls (no outcome by deadline + 10 s), server RSS at the start, peak and after, and
grpc_server_handled_total (its increase) against the calls sent. Figures go to
bench/results/reliability.json. Targets: 0 INTERNAL, 0 UNKNOWN, 0 hung, RSS within the
budget, handled == sent, drain within the grace.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import queue
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections import Counter
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
SERVICE = "facerecon.v1.FaceReconService"
RECONSTRUCT = f"/{SERVICE}/Reconstruct"
STREAM = f"/{SERVICE}/ReconstructStream"
FAULTS = ("INTERNAL", "UNKNOWN")
HUNG_MARGIN_S = 10.0


# ---- the server ------------------------------------------------------------------------------


class Server:
    """`python -m facerecon.server` on loopback; RSS sampled every 20 ms."""

    def __init__(self, weights: Path, extra: list[str]):
        command = [sys.executable, "-m", "facerecon.server", "--address", "127.0.0.1:0",
                   "--metrics-port", "0", "--metrics-address", "127.0.0.1", "--device", "cpu",
                   "--weights", str(weights), *extra]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue = queue.Queue()
        self.non_json = 0
        threading.Thread(target=self._read, daemon=True).start()
        self.listening = self._wait_for("listening", 120)
        self.port = self.listening["port"]
        self.metrics_port = self.listening["metrics_port"]
        self.serving = self._wait_for("serving", 300)
        self.peak = self.rss()
        self._sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                self.non_json += 1

    def _wait_for(self, message: str, seconds: float) -> dict:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                entry = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if entry.get("msg") == message:
                return entry
            if self.process.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"the server never logged {message!r}")

    def rss(self) -> int:
        try:
            pages = int(Path(f"/proc/{self.process.pid}/statm").read_text().split()[1])
        except (OSError, IndexError):
            return 0
        return pages * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while self._sampling and self.process.poll() is None:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def reset_peak(self) -> int:
        self.peak = self.rss()
        return self.peak

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target, options=OPTIONS)

    def handled(self) -> float:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10
        ) as reply:
            text = reply.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("grpc_server_handled_total{")
        )

    def kill(self) -> None:
        self._sampling = False
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self._sampling = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


class Tally:
    """Outcomes of one test's calls, and whether each finished."""

    def __init__(self, server: Server):
        self.server = server
        self.codes: Counter = Counter()
        self.sent = 0
        self.hung = 0
        self.lock = threading.Lock()
        self.rss_start = server.reset_peak()
        self.handled_start = server.handled()
        self.started = time.perf_counter()

    def add(self, code: str) -> None:
        with self.lock:
            self.codes[code] += 1

    def call(self, fn, *args, **kwargs) -> str:
        """Run one blocking call; its status code name."""
        with self.lock:
            self.sent += 1
        try:
            fn(*args, **kwargs)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
        self.add(code)
        return code

    def result(self, **extra) -> dict:
        deadline = time.monotonic() + 10  # the server records a call just after answering it
        handled = self.server.handled() - self.handled_start
        while handled < self.sent and time.monotonic() < deadline:
            time.sleep(0.1)
            handled = self.server.handled() - self.handled_start
        time.sleep(0.5)  # abandoned work winds down: RSS "after"
        return {
            "sent": self.sent,
            "outcomes": dict(sorted(self.codes.items())),
            "internal_or_unknown": sum(self.codes[c] for c in FAULTS),
            "hung": self.hung,
            "rss_start_mb": round(self.rss_start / 2**20, 1),
            "rss_peak_mb": round(self.server.peak / 2**20, 1),
            "rss_after_mb": round(self.server.rss() / 2**20, 1),
            "handled_total": handled,
            "handled_equals_sent": handled == self.sent,
            "seconds": round(time.perf_counter() - self.started, 1),
            **extra,
        }


def run_all(tally: Tally, jobs: list, workers: int, timeout: float) -> None:
    """Run the jobs (callables returning nothing, using tally.call) on `workers` threads;
    those with no outcome by timeout + HUNG_MARGIN_S count as hung."""
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    futures = [pool.submit(job) for job in jobs]
    end = time.monotonic() + timeout + HUNG_MARGIN_S
    for future in futures:
        try:
            future.result(timeout=max(0.0, end - time.monotonic()))
        except concurrent.futures.TimeoutError:
            tally.hung += 1
    pool.shutdown(wait=False, cancel_futures=True)


# ---- inputs ----------------------------------------------------------------------------------


def photo(side: int = 200, fmt: str = "JPEG", **save_args) -> bytes:
    from skimage import data

    image = Image.fromarray(np.ascontiguousarray(data.astronaut()[20:220, 120:320]))
    if side != 200:
        image = image.resize((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with a tiny IDAT (no pixels to speak of)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def big_png(pixels: int) -> bytes:
    """A real, decodable PNG of about `pixels` pixels (flat: ~100 KB)."""
    side = int(pixels**0.5)
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (128, 100, 90)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def bad_corpus(good: bytes, max_receive: int) -> list[tuple[str, bytes]]:
    """(name, the bytes of the request message sent as they are)."""
    rng = random.Random(1)
    items: list[tuple[str, pb.ReconstructRequest | bytes]] = []

    def image(name: str, data: bytes) -> None:
        items.append((name, build_request(data)))

    image("empty", b"")
    image("random_1k", rng.randbytes(1024))
    image("random_100k", rng.randbytes(100_000))
    image("truncated_jpeg", good[: len(good) // 2])
    png = photo(fmt="PNG")
    image("truncated_png", png[: len(png) // 2])
    image("png_bomb_60k_side", png_bomb(60_000, 60_000))
    image("png_bomb_2g", png_bomb(2**31 - 1, 2))
    image("tiny_8px", photo(8, "PNG"))
    image("gif", photo(fmt="GIF"))
    image("bmp", photo(fmt="BMP"))
    image("webp", photo(fmt="WEBP"))
    image("cmyk_jpeg", encoded(Image.open(io.BytesIO(good)).convert("CMYK"), "JPEG"))
    grey16 = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16
    image("grey16_png", encoded(Image.fromarray(grey16), "PNG"))
    image("tiff", b"II*\x00" + rng.randbytes(500))
    image("heic", b"\x00\x00\x00\x18ftypheic" + rng.randbytes(500))
    image("svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    image("pdf", b"%PDF-1.4\n" + rng.randbytes(200))
    boxes = {
        "box_nan": (float("nan"), 0, 10, 10),
        "box_inverted": (100, 100, 10, 10),
        "box_outside": (-5000, -5000, -4000, -4000),
        "box_huge": (0, 0, 1e30, 1e30),
        "box_zero": (10, 10, 10, 10),
    }
    for name, box in boxes.items():
        items.append((name, build_request(good, face_box=box)))
    for name, points in [("landmarks_7", None), ("landmarks_nan", [(float("nan"), 1.0)] * 5),
                         ("landmarks_same", [(50.0, 50.0)] * 5),
                         ("landmarks_inf", [(float("inf"), 0.0)] * 68)]:  # fmt: skip
        request = build_request(good)
        if points is None:
            request.landmarks.xy.extend([1.0] * 7)
        else:
            request.landmarks.xy.extend([v for p in points for v in p])
        items.append((name, request))
    bad_options = {
        "views_17": dict(views=[(0, 0)] * 17),
        "view_size_5": dict(views=[(0, 0)], view_size=5),
        "view_size_5000": dict(views=[(0, 0)], view_size=5000),
        "view_yaw_nan": dict(views=[(float("nan"), 0)]),
        "view_pitch_500": dict(views=[(0, 500)]),
        "decimate_3": dict(decimate_faces=3),
    }
    for name, options in bad_options.items():
        items.append((name, build_request(good, **options)))
    for name, change in [
        ("encoding_42", lambda r: r.options.mesh_encodings.append(42)),
        ("view_format_9", lambda r: setattr(r.options, "view_format", 9)),
        ("chip_layout_77", lambda r: r.options.chip_layouts.append(77)),
        ("background_300", lambda r: setattr(r.options.background, "r", 300)),
        ("request_id_long", lambda r: setattr(r, "request_id", "x" * 500)),
        ("view_source_9", lambda r: setattr(r.options, "view_source", 9)),
        ("pose_reference_empty", lambda r: setattr(r.options, "pose_reference_image", b"")),
        ("pose_reference_junk", lambda r: setattr(r.options, "pose_reference_image", b"junk!")),
    ]:
        request = build_request(good)
        try:
            change(request)
        except ValueError:
            continue
        items.append((name, request))
    corpus: list[tuple[str, bytes]] = [(n, r.SerializeToString()) for n, r in items]
    corpus += [
        ("malformed_protobuf", b"\xff\xff\xff\xff"),
        ("malformed_truncated", build_request(good).SerializeToString()[:-7]),
        ("invalid_utf8_request_id", b"\x0a\x03\xff\xfe\xfd"),
        ("wrong_wire_type", b"\x15\x00\x00\x00\x00"),
        ("oversize_message", b"\x12" + _varint(max_receive + 1024) + b"\0" * (max_receive + 1024)),
        ("random_protobuf", rng.randbytes(300)),
    ]
    return corpus


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# ---- the tests -------------------------------------------------------------------------------


def test_bad_input(server: Server, good: bytes, max_receive: int, repeat: int) -> dict:
    corpus = bad_corpus(good, max_receive)
    tally = Tally(server)
    by_case: dict[str, Counter] = {}
    with server.channel() as channel:
        unary = channel.unary_unary(
            RECONSTRUCT, request_serializer=None, response_deserializer=None
        )
        stream = channel.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
        unknown = channel.unary_unary(f"/{SERVICE}/Nope", request_serializer=None,
                                      response_deserializer=None)  # fmt: skip

        def one(name: str, payload: bytes) -> None:
            code = tally.call(unary, payload, timeout=60)
            by_case.setdefault(name, Counter())[code] += 1

        jobs = [lambda n=n, p=p: one(n, p) for _ in range(repeat) for n, p in corpus]
        jobs.append(lambda: tally.call(unknown, b"", timeout=10))
        run_all(tally, jobs, workers=4, timeout=60)
        # in a stream: each well-formed bad request answered in-band, none kills the stream
        not_protobuf = ("malformed", "invalid", "wrong", "oversize", "random_pro")
        well_formed = [p for n, p in corpus if not n.startswith(not_protobuf)]
        in_band: Counter = Counter()

        def streamed() -> None:
            # ReconstructStreamRequest{request = 1}: the request's bytes as field 1
            messages = (b"\x0a" + _varint(len(p)) + p for p in well_formed)
            with tally.lock:
                tally.sent += 1
            try:
                for raw in stream(messages, timeout=120):
                    reply = pb.ReconstructStreamResponse.FromString(raw)
                    in_band[code_name(reply.error.code) if reply.HasField("error") else "OK"] += 1
                tally.add("OK")
            except grpc.RpcError as error:
                tally.add(error.code().name)

        run_all(tally, [streamed], workers=1, timeout=120)
    return tally.result(
        cases=len(corpus),
        by_case={k: dict(v) for k, v in sorted(by_case.items())},
        stream_in_band=dict(in_band),
        stream_in_band_faults=sum(in_band[c] for c in FAULTS),
    )


def code_name(value: int) -> str:
    """The name of a google.rpc.Status code number."""
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.name
    return f"CODE_{value}"


def test_deadline_storm(server: Server, good: bytes, clients: int, calls: int) -> dict:
    tally = Tally(server)
    request = build_request(good, views=[(0, 0), (30, 0)], view_size=128)
    rng = random.Random(2)
    with server.channel() as channel:
        stub = service_pb2_grpc.FaceReconServiceStub(channel)

        def client() -> None:
            for _ in range(calls):
                deadline = rng.choice((0.005, 0.02, 0.05, 0.1, 0.15, 0.5, 2.0))
                tally.call(stub.Reconstruct, request, timeout=deadline)

        run_all(tally, [client] * clients, workers=clients, timeout=calls * 0.2 + 30)
        # afterwards the server answers normally
        after = tally.call(stub.Reconstruct, request, timeout=60)
    return tally.result(clients=clients, calls_per_client=calls, normal_call_after=after)


def test_overload(server: Server, good: bytes, capacity: int, seconds: float) -> dict:
    tally = Tally(server)
    request = build_request(good, views=[(0, 0)], view_size=128, pose=False)
    callers = 10 * capacity
    stream_callers = callers // 4
    end = time.monotonic() + seconds
    replies = Counter()
    with server.channel() as channel:
        stub = service_pb2_grpc.FaceReconServiceStub(channel)

        def unary_caller() -> None:
            while time.monotonic() < end:
                if tally.call(stub.Reconstruct, request, timeout=60) == "RESOURCE_EXHAUSTED":
                    time.sleep(0.05)  # a client that backs off a little

        def stream_caller() -> None:
            while time.monotonic() < end:
                messages = [pb.ReconstructStreamRequest(request=request)] * 4

                def consume(messages=messages) -> None:
                    for reply in stub.ReconstructStream(iter(messages), timeout=120):
                        name = "OK" if reply.HasField("response") else code_name(reply.error.code)
                        replies[name] += 1

                tally.call(consume)

        jobs = [unary_caller] * (callers - stream_callers) + [stream_caller] * stream_callers
        run_all(tally, jobs, workers=callers, timeout=seconds + 120)
    return tally.result(capacity=capacity, callers=callers, stream_callers=stream_callers,
                        stream_replies=dict(replies),
                        stream_reply_faults=sum(replies[c] for c in FAULTS))  # fmt: skip


def heavy_request(pixels: int, views: int) -> pb.ReconstructRequest:
    """A photo of `pixels`, `views` views and the frontal one at 1024 px, every plain mesh
    encoding."""
    return build_request(big_png(pixels), views=[(-80 + 10 * i, 0) for i in range(views)],
                         view_size=1024, mesh_encodings=("raw", "glb", "ply", "obj"),
                         frontal_view=True)  # fmt: skip


def test_memory(
    server: Server, budget_mb: int, clients: int, pixels: int, views: int, calls: int = 2
) -> dict:
    """Concurrent heavy-but-legal requests (a large photo, views at 1024 px, every plain mesh
    encoding): RSS over the idle baseline stays within the memory budget."""
    from facerecon.server.convert import parse_request
    from facerecon.server.cost import request_cost

    tally = Tally(server)
    heavy = heavy_request(pixels, views)
    cost_mb = request_cost(parse_request(heavy, ""), 40_000_000) / 2**20
    with server.channel() as channel:
        stub = service_pb2_grpc.FaceReconServiceStub(channel)

        def client() -> None:
            for _ in range(calls):
                if tally.call(stub.Reconstruct, heavy, timeout=600) == "RESOURCE_EXHAUSTED":
                    time.sleep(0.5)

        run_all(tally, [client] * clients, workers=clients, timeout=1200)
    result = tally.result(budget_mb=budget_mb, clients=clients, image_pixels=pixels,
                          views_1024=views + 1, estimated_cost_mb=round(cost_mb))  # fmt: skip
    grown = result["rss_peak_mb"] - result["rss_start_mb"]
    result["rss_growth_mb"] = round(grown, 1)
    result["within_budget"] = grown <= budget_mb
    return result


def test_drain(weights: Path, good: bytes, grace: float) -> dict:
    server = Server(weights, ["--max-inflight", "16", "--workers", "2", "--grace-period-s",
                              str(grace), "--drain-notice-s", "1"])  # fmt: skip
    tally = Tally(server)
    request = build_request(good, views=[(-30, 0), (30, 0)], view_size=256)
    try:
        with server.channel() as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            calls = [stub.Reconstruct.future(request, timeout=grace + 30) for _ in range(8)]
            tally.sent += len(calls)
            stream_replies = Counter()

            def streamed() -> None:
                messages = [pb.ReconstructStreamRequest(request=request)] * 3
                for reply in stub.ReconstructStream(iter(messages), timeout=grace + 30):
                    stream_replies["OK" if reply.HasField("response") else "error"] += 1

            stream_thread = threading.Thread(target=lambda: tally.call(streamed))
            stream_thread.start()
            time.sleep(0.5)  # the calls reach the server
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            late = tally.call(stub.Reconstruct, request, timeout=10)
            for call in calls:
                try:
                    call.result(timeout=grace + 30 + HUNG_MARGIN_S)
                    tally.add("OK")
                except grpc.RpcError as error:
                    tally.add(error.code().name)
                except concurrent.futures.TimeoutError:
                    tally.hung += 1
            stream_thread.join(grace + 30)
        try:
            exit_code = server.process.wait(grace + 30)
        except subprocess.TimeoutExpired:
            exit_code = None
        exit_s = time.monotonic() - signalled
        server._sampling = False
        return {
            "sent": tally.sent,
            "outcomes": dict(tally.codes),
            "internal_or_unknown": sum(tally.codes[c] for c in FAULTS),
            "hung": tally.hung,
            "in_flight_ok": sum(1 for c in calls if c.done() and c.exception() is None),
            "in_flight": len(calls),
            "stream_replies": dict(stream_replies),
            "late_call": late,
            "grace_s": grace,
            "exit_code": exit_code,
            "exit_s": round(exit_s, 2),
            "exited_within_grace": exit_code is not None and exit_s <= grace,
            "rss_peak_mb": round(server.peak / 2**20, 1),
            "non_json_stderr_lines": server.non_json,
        }
    finally:
        server.kill()


MUTATIONS = ("flip", "store", "truncate", "splice", "duplicate", "insert", "header_size")


def mutate(data: bytes, rng: random.Random, seeds: list[bytes]) -> tuple[str, bytes]:
    kind = rng.choice(MUTATIONS)
    d = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(d))
            d[i] ^= 1 << rng.randrange(8)
    elif kind == "store":
        for _ in range(rng.randint(1, 4)):
            d[rng.randrange(len(d))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    elif kind == "truncate":
        d = d[: rng.randrange(1, len(d))]
    elif kind == "splice":
        other = rng.choice(seeds)
        cut = rng.randrange(len(d))
        d = d[:cut] + other[rng.randrange(len(other)) :]
    elif kind == "duplicate":
        a = rng.randrange(len(d))
        b = min(len(d), a + rng.randint(1, 512))
        d = d[:b] + d[a:b] * rng.randint(1, 8) + d[b:]
    elif kind == "insert":
        i = rng.randrange(len(d))
        d = d[:i] + rng.randbytes(rng.randint(1, 64)) + d[i:]
    else:  # sizes in the header: every 4-byte or 2-byte field in the first 64 bytes
        i = rng.randrange(min(60, len(d) - 4))
        value = rng.choice((0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 65_500, 100_000))
        size = rng.choice((2, 4))
        fmt = rng.choice((">", "<")) + ("H" if size == 2 else "I")
        d[i : i + size] = struct.pack(fmt, value & (0xFFFF if size == 2 else 0xFFFFFFFF))
    return kind, bytes(d)


def test_fuzz(weights: Path, count: int, seconds: float) -> dict:
    """Mutated images through Reconstructor.prepare (decode, checks, crop) in this process."""
    from facerecon.errors import InputError
    from facerecon.reconstructor import Reconstructor
    from facerecon.server.cost import image_pixels

    reconstructor = Reconstructor(weights, device="cpu")
    seeds = [
        photo(side, fmt) for side in (40, 64, 120) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP")
    ]
    seeds += [photo(64, "PNG", optimize=True), photo(64, "JPEG", progressive=True, quality=50)]
    rng = random.Random(3)
    outcomes: Counter = Counter()
    errors: Counter = Counter()
    by_mutation: Counter = Counter()
    slowest = 0.0
    rss_start = _own_rss()
    rss_peak = rss_start
    start = time.perf_counter()
    done = 0
    while done < count and time.perf_counter() - start < seconds:
        kind, data = mutate(rng.choice(seeds), rng, seeds)
        by_mutation[kind] += 1
        t = time.perf_counter()
        try:
            image_pixels(data, reconstructor.max_pixels)  # admission's header read too
            reconstructor.prepare(data)
            outcomes["accepted"] += 1
        except InputError:
            outcomes["input_error"] += 1
        except Exception as error:  # the failure the fuzz looks for
            outcomes["crash"] += 1
            errors[f"{type(error).__name__}: {str(error)[:80]}"] += 1
        slowest = max(slowest, time.perf_counter() - t)
        done += 1
        if done % 2000 == 0:
            rss_peak = max(rss_peak, _own_rss())
    elapsed = time.perf_counter() - start
    return {
        "sent": done,
        "outcomes": dict(outcomes),
        "crashes": outcomes["crash"],
        "errors": dict(errors.most_common(20)),
        "by_mutation": dict(by_mutation),
        "slowest_ms": round(slowest * 1000, 1),
        "per_second": round(done / elapsed, 1),
        "seconds": round(elapsed, 1),
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_peak_mb": round(max(rss_peak, _own_rss()) / 2**20, 1),
        "hung": 0,
        "internal_or_unknown": 0,
    }


def _own_rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- main ------------------------------------------------------------------------------------


def weights_path(tmp: Path, requested: Path | None) -> tuple[Path, str]:
    if requested is not None:
        return requested, "given"
    if SHIPPED.is_file():
        return SHIPPED, "shipped"
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp / "tiny.pt"), "vrn-tiny slab (tests/conftest.py)"


TESTS = ("bad_input", "deadline_storm", "overload", "memory", "drain", "fuzz")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="small counts (development)")
    parser.add_argument("--fuzz", type=int, default=100_000, help="mutated images")
    parser.add_argument("--fuzz-seconds", type=float, default=600.0)
    parser.add_argument("--max-inflight", type=int, default=8)
    parser.add_argument("--only", nargs="*", choices=TESTS, default=list(TESTS))
    parser.add_argument("--name", default="reliability", help="bench/results/NAME.json")
    args = parser.parse_args(argv)
    quick = args.quick
    good = photo()
    max_receive = 8 << 20
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights, which = weights_path(Path(tmp), args.weights)
        common = ["--workers", "2", "--max-receive-message-bytes", str(max_receive),
                  "--max-inflight", str(args.max_inflight), "--grace-period-s", "5"]  # fmt: skip
        if {"bad_input", "deadline_storm", "overload"} & set(args.only):
            server = Server(weights, common)
            try:
                if "bad_input" in args.only:
                    results["bad_input"] = test_bad_input(server, good, max_receive,
                                                          1 if quick else 3)  # fmt: skip
                if "deadline_storm" in args.only:
                    results["deadline_storm"] = test_deadline_storm(
                        server, good, clients=4 if quick else 8, calls=10 if quick else 40
                    )
                if "overload" in args.only:
                    results["overload"] = test_overload(server, good, args.max_inflight,
                                                        seconds=5 if quick else 30)  # fmt: skip
                results["server_non_json_stderr_lines"] = server.non_json
            finally:
                server.stop()
        if "memory" in args.only:
            budget_mb = 1200 if quick else 2400
            server = Server(weights, [*common, "--memory-budget-mb", str(budget_mb)])
            try:
                results["memory"] = test_memory(
                    server, budget_mb, clients=2 if quick else 4,
                    pixels=(4 if quick else 8) * 10**6, views=4 if quick else 8,
                )  # fmt: skip
            finally:
                server.stop()
            if not quick:  # the costliest request without a face model, two at a time
                from facerecon.server.convert import parse_request
                from facerecon.server.cost import request_cost

                worst = request_cost(parse_request(heavy_request(40_000_000, 16), ""), 40_000_000)
                budget_mb = int(2.2 * worst) >> 20
                server = Server(weights, [*common, "--memory-budget-mb", str(budget_mb)])
                try:
                    results["memory_worst_case"] = test_memory(
                        server, budget_mb, clients=3, pixels=40_000_000, views=16, calls=1
                    )
                finally:
                    server.stop()
        if "drain" in args.only:
            results["drain"] = test_drain(weights, good, grace=10.0)
        if "fuzz" in args.only:
            results["fuzz"] = test_fuzz(weights, 2000 if quick else args.fuzz, args.fuzz_seconds)
    tests = {k: v for k, v in results.items() if isinstance(v, dict)}
    summary = {
        "internal_or_unknown": sum(v.get("internal_or_unknown", 0) for v in tests.values())
        + sum(
            v.get("stream_in_band_faults", 0) + v.get("stream_reply_faults", 0)
            for v in tests.values()
        ),  # fmt: skip
        "hung": sum(v.get("hung", 0) for v in tests.values()),
        "fuzz_crashes": tests.get("fuzz", {}).get("crashes"),
        "handled_equals_sent": all(
            v["handled_equals_sent"] for v in tests.values() if "handled_equals_sent" in v
        ),
        "memory_within_budget": all(
            v["within_budget"] for k, v in tests.items() if k.startswith("memory")
        ),
        "drain_exited_within_grace": tests.get("drain", {}).get("exited_within_grace"),
    }
    figures = {"weights": which, "quick": quick, "max_inflight": args.max_inflight,
               "summary": summary, **results}  # fmt: skip
    save(args.name, figures)
    return figures


if __name__ == "__main__":
    main()
