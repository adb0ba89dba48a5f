"""`make demo` (python -m facerecon_web.demo) runs its own service: a port already taken is a
clear error (never another server quietly used), and SIGTERM stops its child service too.
Real processes, real ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from grpc_harness import RunningServer

from facerecon.reconstructor import Reconstructor

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo(tiny_weights: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "facerecon_web.demo", "--weights", str(tiny_weights), *args]
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def cleanup():
    """Processes to kill whatever happens to the test."""
    pids: list[int] = []
    yield pids
    for pid in [child for parent in pids for child in children(parent)] + pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_port_in_use_is_a_clear_error_not_another_server(tiny_weights, cleanup):
    # a facerecon server that is SERVING on the gRPC port asked for: not to be borrowed
    with RunningServer(Reconstructor(tiny_weights, device="cpu")) as other:
        process = demo(tiny_weights, "--service-port", str(other.port), "--port", str(free_port()))
        cleanup.append(process.pid)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 2, (out, err)
    assert f"gRPC port 127.0.0.1:{other.port} is already in use" in err
    assert "--service-port" in err and "open http" not in out
    # the page's port taken: the same, before any service is started
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = demo(tiny_weights, "--port", str(port))
        cleanup.append(process.pid)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and f"HTTP port 127.0.0.1:{port} is already in use" in err
    assert "starting the service" not in out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_sigterm_stops_the_page_and_its_service(tiny_weights, cleanup):
    port = free_port()
    process = demo(tiny_weights, "--port", str(port))  # the service on a free port of its own
    cleanup.append(process.pid)
    deadline = time.monotonic() + 240
    while True:  # until the page answers (the service is loaded by then)
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the demo did not come up"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                if page.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    (service,) = children(process.pid)
    cleanup.append(service)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, (out, err)
    deadline = time.monotonic() + 15
    while alive(service) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(service), "the demo's service outlived it"
