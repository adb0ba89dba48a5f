"""`facerecon serve` / `python -m facerecon.server`: run the server until SIGTERM or SIGINT.

On the signal, health turns NOT_SERVING (load balancers stop sending), new calls are
refused, and calls in flight get `--grace-period-s` seconds to finish; the process exits
within that period (`FaceReconServer.stop`). Settings that cannot work (a token source with no
token, TLS files that do not fit) end it at once with exit status 2 and a JSON line saying why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import warnings
from collections.abc import Sequence

from PIL import Image

from facerecon.reconstructor import WeightsNotFound
from facerecon.server.app import create_server
from facerecon.server.config import ServerConfig
from facerecon.server.logs import configure_logging

log = logging.getLogger(__name__)


async def serve(config: ServerConfig) -> bool:
    """Serve until SIGTERM/SIGINT, then shut down gracefully. False when the grace period ran
    out with CPU work still running (the process should exit without waiting for it)."""
    server, port = create_server(config)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []

    def on_signal(signum: int) -> None:
        if not stopping:  # a second signal does not restart the grace period
            log.info(
                "shutting down",
                extra={
                    "fields": {
                        "signal": signal.Signals(signum).name,
                        "grace_s": config.grace_period_s,
                    }
                },
            )
            stopping.append(loop.create_task(server.stop()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await server.start()
    log.info(
        "listening",
        extra={
            "fields": {
                "port": port,
                "metrics_port": server.metrics_port,
                "health_port": server.health_port,
                "tls": config.tls_cert is not None,
                "mutual_tls": config.tls_client_ca is not None,
                "auth": config.auth_configured(),
            }
        },
    )
    try:
        await server.wait_for_termination()
    finally:
        if not stopping:
            stopped = await server.stop(0)
        else:
            stopped = await stopping[0]
    return stopped


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    config = ServerConfig.from_args(argv)
    configure_logging(config.log_level, capture_stderr=True)
    # Pillow warns of images over ~89 MP; the server refuses anything over --max-pixels (40 MP)
    # from the header anyway, so each such request would only add a warning line to the log.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    try:
        stopped = asyncio.run(serve(config))
    except WeightsNotFound as error:
        log.error("no model weights", extra={"fields": {"error": str(error)}})
        return 2
    except ValueError as error:  # settings that cannot work (tokens, TLS files): say which
        log.error("cannot start", extra={"fields": {"error": str(error)}})
        return 2
    if not stopped:  # CPU work still running past the grace period: do not wait for it
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
