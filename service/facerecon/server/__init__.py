"""gRPC server for facerecon: FaceReconService, health, reflection, metrics, batching, limits.

from facerecon.server import ServerConfig, create_server, serve, main
"""

from facerecon.server.app import FaceReconServer, create_server
from facerecon.server.config import ServerConfig
from facerecon.server.main import main, serve

__all__ = ["FaceReconServer", "ServerConfig", "create_server", "main", "serve"]
