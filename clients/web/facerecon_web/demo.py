"""`make demo`: the gRPC service and the web gateway together on localhost.

    python -m facerecon_web.demo [--weights PATH] [--detector PATH | --no-detector]
                                 [--port 8000] [--service-port 0]

Starts its own `python -m facerecon.server` as a child process (on a free port unless
--service-port names one; a port already in use is an error, never a server to borrow), waits
until its health check says SERVING, then serves the page until Ctrl-C or SIGTERM, which stop
both.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
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


class Terminated(Exception):
    """SIGTERM arrived: stop the page and the service."""


class PortInUse(RuntimeError):
    """A port the demo would listen on already has a listener."""


def free_port(host: str, port: int, what: str) -> int:
    """`port` if nothing listens on it at `host` (0: a port the system picks), else PortInUse."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortInUse(
                f"{what} port {host}:{port} is already in use ({error.strerror}): another "
                f"facerecon server or demo? Stop it, or pass another port "
                f"({'--port' if what == 'HTTP' else '--service-port'} N, or 0 for a free one)"
            ) from None
        return probe.getsockname()[1]


def wait_until_serving(target: str, service: subprocess.Popen, timeout_s: float) -> None:
    """Polls grpc.health.v1 until SERVING; RuntimeError if the service exits or is too slow.

    Only this demo's own child is waited for: if it has exited (e.g. it could not bind its
    port), whatever else answers at `target` does not count."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if service.poll() is not None:
                raise RuntimeError(f"the service exited with status {service.returncode}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    if service.poll() is not None:  # the answer came from another server
                        raise RuntimeError(f"the service exited with status {service.returncode}")
                    return
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.5)
    raise RuntimeError(f"the service was not ready after {timeout_s:.0f} s")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the demo dies, even by SIGKILL (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def stop(service: subprocess.Popen) -> None:
    if service.poll() is None:
        service.terminate()
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights",
        type=Path,
        default=Path(os.environ.get("FACERECON_WEIGHTS", DEFAULT_WEIGHTS)),
        help="checkpoint (default: $FACERECON_WEIGHTS or weights/facerecon.pt)",
    )
    detection = parser.add_mutually_exclusive_group()
    detection.add_argument(
        "--detector",
        help="face detector (YuNet or SCRFD .onnx; default: $FACERECON_DETECTOR, else the "
        "shipped YuNet, as for the server)",
    )
    detection.add_argument(
        "--no-detector",
        action="store_true",
        help="take each photo whole as a face crop",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address of both")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the page")
    parser.add_argument(
        "--service-port", type=int, default=0, help="gRPC port (default 0: a free one)"
    )
    args = parser.parse_args(argv)
    if not args.weights.is_file():
        print(f"no checkpoint at {args.weights}: pass --weights or set FACERECON_WEIGHTS")
        return 2
    try:
        free_port(args.host, args.port, "HTTP")
        service_port = free_port(args.host, args.service_port, "gRPC")
    except PortInUse as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2

    target = f"{args.host}:{service_port}"
    command = [sys.executable, "-m", "facerecon.server", "--address", target,
               "--weights", str(args.weights), "--metrics-port", "",
               "--grace-period-s", "2"]  # fmt: skip
    if args.no_detector:
        command += ["--detector", "none"]
    elif args.detector is not None:
        command += ["--detector", args.detector]
    # uvicorn stops on SIGTERM, then raises it again once its own handler is gone: with this
    # handler that becomes Terminated here, and the service is stopped too (with the default
    # one the process would die at once and leave the service running).
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    service = subprocess.Popen(command, preexec_fn=_die_with_parent)
    try:
        print(f"starting the service on {target} (loading {args.weights}) ...", flush=True)
        wait_until_serving(target, service, timeout_s=300)
        print(f"demo: open http://{args.host}:{args.port} (Ctrl-C stops both)", flush=True)
        uvicorn.run(create_app(GatewaySettings(service=target)), host=args.host, port=args.port)
    except RuntimeError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass  # Ctrl-C while the service was still loading
    except Terminated:
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut this short
        stop(service)
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
