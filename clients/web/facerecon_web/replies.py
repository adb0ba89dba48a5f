"""A ReconstructResponse as the JSON the page shows (views inline as PNG data URLs)."""

from __future__ import annotations

import base64

from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import types_pb2 as types

MESH_KINDS = ("glb", "ply", "obj", "textured_glb")


def mesh_files(reply: pb.ReconstructResponse) -> dict[str, bytes]:
    """{"glb": bytes, "ply": bytes, "obj": bytes, "textured_glb": bytes}, leaving out
    encodings not returned."""
    return {kind: getattr(reply.mesh, kind) for kind in MESH_KINDS if getattr(reply.mesh, kind)}


def view_json(view: types.View) -> dict:
    mime = "image/jpeg" if view.format == types.IMAGE_FORMAT_JPEG else "image/png"
    data = base64.b64encode(view.image).decode("ascii")
    return {
        "yaw": round(view.yaw_deg, 1),
        "pitch": round(view.pitch_deg, 1),
        "src": f"data:{mime};base64,{data}",
    }


def reply_json(reply: pb.ReconstructResponse, result_id: str, files: dict[str, bytes]) -> dict:
    """What the page needs: pose, timings, views, where to download each mesh file, and the
    fitted face model's figures when there is one."""
    pose = None
    if reply.HasField("pose"):
        pose = {
            "yaw": round(reply.pose.yaw_deg, 1),
            "pitch": round(reply.pose.pitch_deg, 1),
            "roll": round(reply.pose.roll_deg, 1),
        }
    return {
        "id": result_id,
        "model": {"name": reply.model.name, "version": reply.model.version},
        "pose": pose,
        # how the service found the face, and what it says about it (e.g. no face found: the
        # whole photo was taken as the face crop)
        "face_source": types.FaceSource.Name(reply.face_source)
        .removeprefix("FACE_SOURCE_")
        .lower(),
        "notes": list(reply.notes),
        "timings_ms": {k: round(v, 1) for k, v in reply.timings_ms.items()},
        "views": [view_json(v) for v in reply.views],
        "frontal": view_json(reply.frontal_view) if reply.HasField("frontal_view") else None,
        "registration": registration_json(reply) if reply.HasField("registration") else None,
        "meshes": {
            kind: {"url": f"/api/results/{result_id}/face.{kind}", "bytes": len(data)}
            for kind, data in files.items()
        },
    }


def registration_json(reply: pb.ReconstructResponse) -> dict:
    r = reply.registration
    return {
        "topology": r.topology,
        "vertices": r.vertex_count,
        "pose": {
            "yaw": round(r.pose.yaw_deg, 1),
            "pitch": round(r.pose.pitch_deg, 1),
            "roll": round(r.pose.roll_deg, 1),
        },
        "fit_error_px": round(r.fit_error, 2),
    }
