"""`python -m facerecon_web`: serve the web demo against a running facerecon service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn

from facerecon_web.app import create_app
from facerecon_web.settings import GatewaySettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m facerecon_web",
        description="Serve the web demo against a running facerecon service.",
    )
    parser.add_argument("--service", help="gRPC service host:port ($FACERECON_WEB_SERVICE)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    parser.add_argument("--max-upload-bytes", type=int, help="largest photo accepted")
    args = parser.parse_args(argv)
    settings = GatewaySettings.from_environ(
        service=args.service, max_upload_bytes=args.max_upload_bytes
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
