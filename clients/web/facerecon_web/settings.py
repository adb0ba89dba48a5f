"""Gateway settings: one frozen dataclass, filled from flags or FACERECON_WEB_* variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class GatewaySettings:
    # Where the gRPC service listens (plaintext: the demo runs both on one machine).
    service: str = "127.0.0.1:50051"
    # Largest upload, bytes. Below the service's 64 MiB request cap, so the gateway's 413
    # is what a user sees, with a message, rather than a transport error.
    max_upload_bytes: int = 20 * MiB
    # Views shown in the strip under the viewer: (yaw, pitch) in degrees.
    views: tuple[tuple[float, float], ...] = ((-60, 0), (-30, 0), (0, 0), (30, 0), (60, 0))
    view_size: int = 192
    # Meshes stay in memory this long for the download buttons, then are dropped.
    result_ttl_s: float = 600.0
    # Bound on meshes held at once (oldest dropped first): memory stays bounded under load.
    max_results: int = 32
    max_result_bytes: int = 512 * MiB
    # Uploads in progress at once (each holds its photo in memory); beyond it, 503.
    max_inflight: int = 16
    # Deadline of one Reconstruct call, seconds.
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if min(self.max_upload_bytes, self.max_results, self.max_inflight) < 1:
            raise ValueError("max_upload_bytes, max_results and max_inflight must be positive")
        if self.result_ttl_s <= 0 or self.timeout_s <= 0:
            raise ValueError("result_ttl_s and timeout_s must be positive")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **overrides) -> GatewaySettings:
        """FACERECON_WEB_SERVICE and FACERECON_WEB_MAX_UPLOAD_BYTES, then `overrides`."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        if "FACERECON_WEB_SERVICE" in environ:
            values["service"] = environ["FACERECON_WEB_SERVICE"]
        if "FACERECON_WEB_MAX_UPLOAD_BYTES" in environ:
            values["max_upload_bytes"] = int(environ["FACERECON_WEB_MAX_UPLOAD_BYTES"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
