"""Structured logs: one JSON object per line on stderr (what log collectors parse).

Callers pass structured fields with `extra={"fields": {...}}`. Nothing a client sends is
ever logged: access-log lines carry the method, status, latency, peer and request id only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", capture_stderr: bool = False) -> None:
    """JSON lines on stderr for the whole process.

    Python warnings go through logging (logger "py.warnings"). With `capture_stderr` (the
    server process), whatever else writes to file descriptor 2 — gRPC's C core (handshake
    failures), native libraries, stray prints — is read back line by line and re-emitted as
    JSON (logger "stderr"), so log collectors never meet a line they cannot parse."""
    stream = sys.stderr
    if capture_stderr:
        stream = _capture_fd2()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)


def _capture_fd2():
    """Point fd 2 at a pipe whose lines are wrapped as JSON; returns a stream on the real
    stderr for the JSON handler itself."""
    sys.stderr.flush()
    real = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    lock = threading.Lock()

    def pump() -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                level = "ERROR" if line[:1] == "E" or "Error" in line else "WARNING"
                entry = {
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z",
                    "level": level,
                    "logger": "stderr",
                    "msg": line[:2000],
                }
                with lock:
                    real.write(json.dumps(entry) + "\n")

    threading.Thread(target=pump, name="stderr-json", daemon=True).start()
    return real
