"""Between the wire and the engine: request messages -> engine arguments, results -> replies.

Checks here cover only what the protocol adds (enum values, landmark counts, id length);
everything else (image, face box, view angles and sizes) is validated by the engine, which
raises `InputError` naming the field.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from facerecon import export, texture
from facerecon.errors import InputError
from facerecon.pose import Pose
from facerecon.reconstructor import Reconstruction, ReconstructOptions, View
from facerecon.registration import Registration
from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import types_pb2 as types

MAX_REQUEST_ID = 128
DEFAULT_VIEW_SIZE = 256
JPEG_QUALITY = 90
WHITE = (255, 255, 255)
CHIP_LAYOUTS = {  # ChipLayout value -> facerecon.chips layout name
    types.CHIP_LAYOUT_ARCFACE_112: "arcface112",
    types.CHIP_LAYOUT_DLIB_150: "dlib150",
}
CHIP_ENUMS = {name: value for value, name in CHIP_LAYOUTS.items()}
TEXTURED = frozenset({types.MESH_ENCODING_TEXTURED_GLB, types.MESH_ENCODING_TEXTURED_OBJ})
# the proto's registration regions by ReconstructOptions.registration_region's names
REGISTRATION_REGIONS = {
    types.REGISTRATION_REGION_UNSPECIFIED: "head",
    types.REGISTRATION_REGION_HEAD: "head",
    types.REGISTRATION_REGION_FACE: "face",
}


@dataclass(frozen=True)
class ParsedRequest:
    request_id: str
    image: bytes
    face_box: tuple[float, float, float, float] | None
    landmarks: np.ndarray | None
    options: ReconstructOptions
    encodings: frozenset[int]  # MeshEncoding values
    view_format: int  # ImageFormat value (PNG or JPEG)
    pose_reference: bytes | None = None  # a photo whose head pose the matched view copies


def parse_request(request: pb.ReconstructRequest, request_id: str) -> ParsedRequest:
    """Engine arguments for a request; InputError for what the protocol itself forbids."""
    if len(request_id) > MAX_REQUEST_ID:
        raise InputError(
            f"request_id is longer than {MAX_REQUEST_ID} characters", field="request_id"
        )
    if not request.image:
        raise InputError("image is empty: send the photo's encoded bytes", field="image")
    face_box = landmarks = None
    if request.HasField("face_box"):
        b = request.face_box
        face_box = (b.x0, b.y0, b.x1, b.y1)
    elif request.HasField("landmarks"):
        xy = np.asarray(request.landmarks.xy, dtype=np.float32)
        if xy.size not in (10, 136):
            raise InputError(
                "landmarks must be 5 or 68 points (10 or 136 values x, y, ...)", field="landmarks"
            )
        landmarks = xy.reshape(-1, 2)
    o = request.options
    encodings = frozenset(o.mesh_encodings) or frozenset({types.MESH_ENCODING_GLB})
    if not encodings <= set(types.MeshEncoding.values()) - {types.MESH_ENCODING_UNSPECIFIED}:
        raise InputError(
            "unknown mesh encoding: use RAW, GLB, PLY, OBJ, TEXTURED_GLB or TEXTURED_OBJ",
            field="options.mesh_encodings",
        )
    view_format = o.view_format or types.IMAGE_FORMAT_PNG
    if view_format not in (types.IMAGE_FORMAT_PNG, types.IMAGE_FORMAT_JPEG):
        raise InputError("unknown view format: use PNG or JPEG", field="options.view_format")
    background = (
        (o.background.r, o.background.g, o.background.b) if o.HasField("background") else None
    )
    if not set(o.chip_layouts) <= CHIP_LAYOUTS.keys():
        raise InputError(
            "unknown chip layout: use ARCFACE_112 or DLIB_150", field="options.chip_layouts"
        )
    target_pose = pose_reference = None
    match o.WhichOneof("pose_match"):
        case "target_pose":
            target_pose = Pose(o.target_pose.yaw_deg, o.target_pose.pitch_deg, 0.0)
        case "pose_reference_image":
            if not o.pose_reference_image:
                raise InputError(
                    "pose_reference_image is empty: send the photo's encoded bytes",
                    field="options.pose_reference_image",
                )
            pose_reference = o.pose_reference_image
    if o.view_source not in types.ViewSource.values():
        raise InputError(
            "unknown view source: use RAW_MESH or REGISTERED_MESH", field="options.view_source"
        )
    registered_views = o.view_source == types.VIEW_SOURCE_REGISTERED_MESH
    if o.registration_region not in REGISTRATION_REGIONS:
        raise InputError(
            "unknown registration region: use HEAD or FACE", field="options.registration_region"
        )
    options = ReconstructOptions(
        views=tuple((v.yaw_deg, v.pitch_deg) for v in o.views),
        view_size=o.view_size or DEFAULT_VIEW_SIZE,
        background=background,
        frontal=o.frontal_view,
        pose=o.pose,
        decimate_faces=o.decimate_faces or None,
        chips=tuple(CHIP_LAYOUTS[c] for c in o.chip_layouts),
        visibility=o.visibility,
        target_pose=target_pose,
        # textured files and views of the registered mesh are made from the registration
        registration=o.registration or registered_views or bool(encodings & TEXTURED),
        registered_views=registered_views,
        registration_region=REGISTRATION_REGIONS[o.registration_region],
    )
    options.validate()
    return ParsedRequest(
        request_id, request.image, face_box, landmarks, options, encodings, view_format,
        pose_reference,
    )  # fmt: skip


FACE_SOURCES = {
    "request": types.FACE_SOURCE_REQUEST,
    "detector": types.FACE_SOURCE_DETECTOR,
    "whole_image": types.FACE_SOURCE_WHOLE_IMAGE,
}


def build_response(result: Reconstruction, parsed: ParsedRequest) -> pb.ReconstructResponse:
    """The reply for a finished reconstruction (encodes mesh files and views: CPU work)."""
    mesh = result.mesh
    out = types.Mesh()
    if types.MESH_ENCODING_RAW in parsed.encodings:
        out.raw.CopyFrom(
            types.RawMesh(
                vertex_count=len(mesh.vertices),
                face_count=len(mesh.faces),
                vertices=mesh.vertices.astype("<f4").tobytes(),
                faces=mesh.faces.astype("<i4").tobytes(),
                colors=b"" if mesh.colors is None else mesh.colors.astype(np.uint8).tobytes(),
                normals=b"" if mesh.normals is None else mesh.normals.astype("<f4").tobytes(),
            )
        )
    if types.MESH_ENCODING_GLB in parsed.encodings:
        out.glb = export.to_glb(mesh)
    if types.MESH_ENCODING_PLY in parsed.encodings:
        out.ply = export.to_ply(mesh)
    if types.MESH_ENCODING_OBJ in parsed.encodings:
        out.obj = export.to_obj(mesh)
    if result.registration is not None:
        registration, png = result.registration, export.to_png(result.texture)  # once
        if types.MESH_ENCODING_TEXTURED_GLB in parsed.encodings:
            out.textured_glb = texture.to_textured_glb(registration, png)
        if types.MESH_ENCODING_TEXTURED_OBJ in parsed.encodings:
            files = texture.to_textured_obj(registration, png, name="face")
            out.textured_obj.CopyFrom(
                types.TexturedObj(obj=files["face.obj"], mtl=files["face.mtl"], png=png)
            )
    response = pb.ReconstructResponse(
        request_id=parsed.request_id,
        mesh=out,
        views=[encode_view(v, parsed) for v in result.views],
        model=types.ModelVersion(name=result.model.variant, version=result.model.version),
        face_source=FACE_SOURCES[result.face_source],
        notes=result.notes,
    )
    if result.landmarks68 is not None:
        response.landmarks68.xy.extend(result.landmarks68.reshape(-1).tolist())
    if result.face_box is not None:
        x0, y0, x1, y1 = (float(v) for v in result.face_box)
        response.detected_face.CopyFrom(types.FaceBox(x0=x0, y0=y0, x1=x1, y1=y1))
    if result.frontal is not None:
        response.frontal_view.CopyFrom(encode_view(result.frontal, parsed))
    if result.pose is not None:
        p = result.pose
        response.pose.CopyFrom(types.Pose(yaw_deg=p.yaw, pitch_deg=p.pitch, roll_deg=p.roll))
    if result.matched is not None:
        m = result.matched
        response.matched_view.CopyFrom(encode_view(m, parsed))
        response.matched_pose.CopyFrom(types.Pose(yaw_deg=m.yaw, pitch_deg=m.pitch))
    if result.registration is not None:
        response.registration.CopyFrom(encode_registration(result.registration, png))
    return response


def encode_registration(registration: Registration, texture_png: bytes) -> types.Registration:
    r = registration
    p = r.pose
    return types.Registration(
        topology=r.topology,
        vertex_count=len(r.vertices),
        triangle_count=len(r.triangles),
        vertices=r.vertices.astype("<f4").tobytes(),
        triangles=r.triangles.astype("<i4").tobytes(),
        landmarks68_3d=r.landmarks68_3d.reshape(-1).tolist(),
        landmarks68_2d=types.Landmarks(xy=r.landmarks68_2d.reshape(-1).tolist()),
        pose=types.Pose(yaw_deg=p.yaw, pitch_deg=p.pitch, roll_deg=p.roll),
        scale=r.scale,
        identity=r.identity.tolist(),
        expression=r.expression.tolist(),
        expression_names=r.expression_names,
        fit_error=r.fit_error,
        inlier_fraction=r.inlier_fraction,
        texture=texture_png,
        uv_count=len(r.uv),
        uv=r.uv.astype("<f4").tobytes(),
        triangle_uvs=r.triangle_uvs.astype("<i4").tobytes(),
    )


def encode_view(view: View, parsed: ParsedRequest) -> types.View:
    height, width = view.image.shape[:2]
    message = types.View(
        yaw_deg=view.yaw,
        pitch_deg=view.pitch,
        width=width,
        height=height,
        format=parsed.view_format,
        image=encode_image(view.image, parsed),
    )
    for name, chip in view.chips.items():
        message.chips.add(
            layout=CHIP_ENUMS[name],
            width=chip.shape[1],
            height=chip.shape[0],
            format=parsed.view_format,
            image=encode_image(chip, parsed),
        )
    if view.points5 is not None:
        message.landmarks.xy.extend(view.points5.reshape(-1).tolist())
    if view.visibility is not None:
        message.visibility_mask = encode_mask(view.visibility)
        message.visible_fraction = view.visible_fraction
    return message


def encode_image(rgba: np.ndarray, parsed: ParsedRequest) -> bytes:
    if parsed.view_format == types.IMAGE_FORMAT_JPEG:
        return to_jpeg(rgba, parsed.options.background or WHITE)
    return export.to_png(rgba)


def encode_mask(mask: np.ndarray) -> bytes:
    """A bool mask as an 8-bit greyscale PNG: 255 true, 0 false."""
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def to_jpeg(rgba: np.ndarray, background: tuple[int, int, int]) -> bytes:
    """RGBA drawn over `background`, as JPEG (which has no alpha)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3] * alpha + np.asarray(background, np.float32) * (1.0 - alpha)
    buffer = io.BytesIO()
    Image.fromarray(rgb.round().astype(np.uint8)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
