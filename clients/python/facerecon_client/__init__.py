"""Python client for the facerecon gRPC service (package facerecon.v1).

    from facerecon_client import FaceReconClient

    with FaceReconClient("localhost:50051") as client:
        reply = client.reconstruct(Path("face.jpg").read_bytes(), views=[(-45, 0), (45, 0)])
        Path("face.glb").write_bytes(reply.mesh.glb)

`AsyncFaceReconClient` is the asyncio twin. Before the first call a client waits (60 s by
default, `ready_timeout_s`) while the server starts and loads its model, and raises
ServerNotReady if it is not serving by then. Unary calls have a default deadline and are
retried with exponential backoff on UNAVAILABLE only (server restarting or shutting down);
every other error is raised at once as grpc.RpcError.
"""

from facerecon_client.aio import AsyncFaceReconClient
from facerecon_client.client import FaceReconClient
from facerecon_client.ready import ServerNotReady
from facerecon_client.requests import build_request
from facerecon_client.results import (
    bad_request_fields,
    mesh_arrays,
    registration_arrays,
    texture_image,
    textured_obj_files,
    to_mesh,
)

__all__ = [
    "AsyncFaceReconClient",
    "FaceReconClient",
    "ServerNotReady",
    "bad_request_fields",
    "build_request",
    "mesh_arrays",
    "registration_arrays",
    "texture_image",
    "textured_obj_files",
    "to_mesh",
]
