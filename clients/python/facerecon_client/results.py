"""Turning replies back into arrays and meshes, and errors into field violations."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import grpc
import numpy as np
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import types_pb2 as types

if TYPE_CHECKING:
    from facerecon.mesh import Mesh


def mesh_arrays(raw: types.RawMesh) -> dict[str, np.ndarray]:
    """vertices float32 (V, 3), faces int32 (F, 3), colors uint8 (V, 3), normals float32
    (V, 3) from a RawMesh (request MESH_ENCODING_RAW); empty arrays are left out."""
    v, f = raw.vertex_count, raw.face_count
    arrays = {
        "vertices": np.frombuffer(raw.vertices, "<f4").reshape(v, 3),
        "faces": np.frombuffer(raw.faces, "<i4").reshape(f, 3),
    }
    if raw.colors:
        arrays["colors"] = np.frombuffer(raw.colors, np.uint8).reshape(v, 3)
    if raw.normals:
        arrays["normals"] = np.frombuffer(raw.normals, "<f4").reshape(v, 3)
    return arrays


def registration_arrays(registration: types.Registration) -> dict[str, np.ndarray]:
    """The fitted face model as arrays: vertices float32 (V, 3) and triangles int32 (F, 3)
    (image pixels, y down, like the raw mesh), landmarks68_3d float32 (68, 3),
    landmarks68_2d float32 (68, 2), identity and expression float32 (weights; names in
    `registration.expression_names`), uv float32 (U, 2) and triangle_uvs int32 (F, 3)."""
    r = registration
    v, f = r.vertex_count, r.triangle_count
    return {
        "vertices": np.frombuffer(r.vertices, "<f4").reshape(v, 3),
        "triangles": np.frombuffer(r.triangles, "<i4").reshape(f, 3),
        "landmarks68_3d": np.asarray(r.landmarks68_3d, np.float32).reshape(-1, 3),
        "landmarks68_2d": np.asarray(r.landmarks68_2d.xy, np.float32).reshape(-1, 2),
        "identity": np.asarray(r.identity, np.float32),
        "expression": np.asarray(r.expression, np.float32),
        "uv": np.frombuffer(r.uv, "<f4").reshape(r.uv_count, 2),
        "triangle_uvs": np.frombuffer(r.triangle_uvs, "<i4").reshape(f, 3),
    }


def texture_image(registration: types.Registration) -> np.ndarray:
    """The registration's UV texture atlas, uint8 RGB (S, 2S, 3)."""
    from PIL import Image

    with Image.open(io.BytesIO(registration.texture)) as image:
        return np.asarray(image.convert("RGB"))


def textured_obj_files(textured: types.TexturedObj, name: str = "face") -> dict[str, bytes]:
    """{file name: bytes} of a TexturedObj, renamed so that `name`.obj refers to `name`.mtl
    and that to `name`.png: several faces can share a folder."""
    obj = textured.obj.replace(b"mtllib face.mtl\n", f"mtllib {name}.mtl\n".encode(), 1)
    mtl = textured.mtl.replace(b"map_Kd face.png", f"map_Kd {name}.png".encode(), 1)
    return {f"{name}.obj": obj, f"{name}.mtl": mtl, f"{name}.png": textured.png}


def to_mesh(response: pb.ReconstructResponse) -> Mesh:
    """The reply's raw mesh as a facerecon.mesh.Mesh (needs the facerecon package)."""
    from facerecon.mesh import Mesh

    if not response.mesh.HasField("raw"):
        raise ValueError("the reply has no raw mesh: request mesh_encodings=('raw', ...)")
    return Mesh(**{k: a.copy() for k, a in mesh_arrays(response.mesh.raw).items()})


def bad_request_fields(error: grpc.RpcError | status_pb2.Status) -> dict[str, str]:
    """{field: description} from the google.rpc.BadRequest details of an INVALID_ARGUMENT
    error (a unary call's RpcError, or a stream reply's in-band `error`)."""
    status = error if isinstance(error, status_pb2.Status) else rpc_status.from_call(error)
    fields: dict[str, str] = {}
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.update({v.field: v.description for v in bad.field_violations})
    return fields
