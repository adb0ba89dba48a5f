"""Web demo of facerecon: a small HTTP gateway in front of the gRPC service.

The browser posts one photo; the gateway checks it, calls the service through the
project's async client (the production path), keeps the meshes in memory for a few minutes
so they can be downloaded, and answers with the pose, timings and rendered views. The page
(static/) shows the coloured mesh in a three.js viewer.

    uvicorn --factory facerecon_web:create_app      # or: python -m facerecon_web --help
"""

from facerecon_web.app import create_app
from facerecon_web.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]
