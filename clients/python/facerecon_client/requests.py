"""Building requests from plain Python values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import types_pb2 as types

MESH_ENCODINGS = {
    "raw": types.MESH_ENCODING_RAW,
    "glb": types.MESH_ENCODING_GLB,
    "ply": types.MESH_ENCODING_PLY,
    "obj": types.MESH_ENCODING_OBJ,
    "textured_glb": types.MESH_ENCODING_TEXTURED_GLB,
    "textured_obj": types.MESH_ENCODING_TEXTURED_OBJ,
}
IMAGE_FORMATS = {"png": types.IMAGE_FORMAT_PNG, "jpeg": types.IMAGE_FORMAT_JPEG}
VIEW_SOURCES = {
    "raw": types.VIEW_SOURCE_RAW_MESH,
    "registered": types.VIEW_SOURCE_REGISTERED_MESH,
}
REGISTRATION_REGIONS = {
    "head": types.REGISTRATION_REGION_HEAD,
    "face": types.REGISTRATION_REGION_FACE,
}
CHIP_LAYOUTS = {"arcface112": types.CHIP_LAYOUT_ARCFACE_112, "dlib150": types.CHIP_LAYOUT_DLIB_150}


def build_request(
    image: bytes | str | Path,
    *,
    request_id: str = "",
    face_box: Sequence[float] | None = None,
    landmarks: Iterable[Sequence[float]] | None = None,
    mesh_encodings: Iterable[str] = ("glb",),
    views: Iterable[tuple[float, float]] = (),
    view_size: int = 256,
    view_format: str = "png",
    background: tuple[int, int, int] | None = None,
    frontal_view: bool = False,
    pose: bool = True,
    decimate_faces: int | None = None,
    chip_layouts: Iterable[str] = (),
    visibility: bool = False,
    target_pose: tuple[float, float] | None = None,
    pose_reference: bytes | str | Path | None = None,
    registration: bool = False,
    view_source: str = "raw",
    registration_region: str = "head",
) -> pb.ReconstructRequest:
    """A ReconstructRequest; `image` is encoded bytes or a file path. Angles in degrees.

    `chip_layouts`: "arcface112" and/or "dlib150" aligned chips of every view; `visibility`:
    per-view seen masks; `target_pose` (yaw, pitch) or `pose_reference` (a photo, bytes or
    path, whose pose to copy): also render the matched view. `registration`: also fit the
    server's face model (reply.registration; see `registration_arrays`); the "textured_glb"
    and "textured_obj" encodings and `view_source="registered"` (views of the textured
    registered mesh) need it too and turn it on; `registration_region` "face" returns,
    exports and shows the registered facial mask alone ("head": with ears, scalp and neck)."""
    if not isinstance(image, bytes):
        image = Path(image).read_bytes()
    options = types.ReconstructOptions(
        mesh_encodings=[MESH_ENCODINGS[e.lower()] for e in mesh_encodings],
        views=[types.ViewAngle(yaw_deg=yaw, pitch_deg=pitch) for yaw, pitch in views],
        view_size=view_size,
        view_format=IMAGE_FORMATS[view_format.lower()],
        frontal_view=frontal_view,
        pose=pose,
        decimate_faces=decimate_faces or 0,
        chip_layouts=[CHIP_LAYOUTS[c.lower()] for c in chip_layouts],
        visibility=visibility,
        registration=registration,
        view_source=VIEW_SOURCES[view_source.lower()],
        registration_region=REGISTRATION_REGIONS[registration_region.lower()],
    )
    if target_pose is not None:
        options.target_pose.CopyFrom(types.Pose(yaw_deg=target_pose[0], pitch_deg=target_pose[1]))
    elif pose_reference is not None:
        if not isinstance(pose_reference, bytes):
            pose_reference = Path(pose_reference).read_bytes()
        options.pose_reference_image = pose_reference
    if background is not None:
        options.background.CopyFrom(types.Color(r=background[0], g=background[1], b=background[2]))
    request = pb.ReconstructRequest(request_id=request_id, image=image, options=options)
    if face_box is not None:
        x0, y0, x1, y1 = face_box
        request.face_box.CopyFrom(types.FaceBox(x0=x0, y0=y0, x1=x1, y1=y1))
    elif landmarks is not None:
        request.landmarks.xy.extend(float(v) for point in landmarks for v in point)
    return request
