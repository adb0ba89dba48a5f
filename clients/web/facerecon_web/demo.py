"""`make demo`: the gRPC service and the web gateway together on localhost.

    python -m facerecon_web.demo [--weights PATH] [--detector PATH] [--port 8000]

Starts `python -m facerecon.server` as a child process, waits until its health check says
SERVING, then serves the page until Ctrl-C, which stops both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facerecon_web.app import create_app
from facerecon_web.settings import GatewaySettings

DEFAULT_WEIGHTS = Path("weights/facerecon.pt")


def wait_until_serving(target: str, service: subprocess.Popen, timeout_s: float) -> None:
    """Polls grpc.health.v1 until SERVING; RuntimeError if the service exits or is too slow."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if service.poll() is not None:
                raise RuntimeError(f"the service exited with status {service.returncode}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.5)
    raise RuntimeError(f"the service was not ready after {timeout_s:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights",
        type=Path,
        default=Path(os.environ.get("FACERECON_WEIGHTS", DEFAULT_WEIGHTS)),
        help="checkpoint (default: $FACERECON_WEIGHTS or weights/facerecon.pt)",
    )
    parser.add_argument(
        "--detector",
        type=Path,
        help="face detector (YuNet or SCRFD .onnx; default: $FACERECON_DETECTOR or none, "
        "and then each photo is taken as a face crop)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address of both")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the page")
    parser.add_argument("--service-port", type=int, default=50051, help="gRPC port")
    args = parser.parse_args(argv)
    if not args.weights.is_file():
        print(f"no checkpoint at {args.weights}: pass --weights or set FACERECON_WEIGHTS")
        return 2

    target = f"{args.host}:{args.service_port}"
    command = [sys.executable, "-m", "facerecon.server", "--address", target,
               "--weights", str(args.weights), "--metrics-port", "",
               "--grace-period-s", "2"]  # fmt: skip
    if args.detector is not None:
        command += ["--detector", str(args.detector)]
    service = subprocess.Popen(command)
    try:
        print(f"starting the service on {target} (loading {args.weights}) ...", flush=True)
        wait_until_serving(target, service, timeout_s=300)
        print(f"demo: open http://{args.host}:{args.port} (Ctrl-C stops both)", flush=True)
        uvicorn.run(create_app(GatewaySettings(service=target)), host=args.host, port=args.port)
    except RuntimeError as error:
        print(f"demo: {error}")
        return 1
    except KeyboardInterrupt:
        pass  # Ctrl-C while the service was still loading
    finally:
        if service.poll() is None:
            service.terminate()
            try:
                service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                service.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
