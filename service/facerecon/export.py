"""Mesh and image files as bytes: OBJ, PLY, GLB (glTF 2.0 binary), PNG.

Mesh files keep the image's pixel units but flip y, so that they are right-handed, y up and
+z towards the viewer (the glTF frame) and open upright; faces are then counter-clockwise
seen from outside, as every format here expects. Nothing is written to disk.
"""

from __future__ import annotations

import io

import numpy as np
import pygltflib as gltf
from PIL import Image

from facerecon.mesh import FLIP_Y, Mesh


def _upright(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and unit normals in the y-up file frame."""
    normals = mesh.normals if mesh.normals is not None else mesh.with_normals().normals
    return mesh.vertices * FLIP_Y, normals * FLIP_Y


def to_obj(mesh: Mesh) -> bytes:
    """Wavefront OBJ: `v x y z r g b` (colours in [0, 1], when present), `vn`, `f a//a ...`."""
    vertices, normals = _upright(mesh)
    if mesh.colors is not None:
        v = np.hstack([vertices, mesh.colors / 255.0])
        v_lines = "v %.4f %.4f %.4f %.4f %.4f %.4f\n" * len(v) % tuple(v.ravel())
    else:
        v_lines = "v %.4f %.4f %.4f\n" * len(vertices) % tuple(vertices.ravel())
    vn_lines = "vn %.4f %.4f %.4f\n" * len(normals) % tuple(normals.ravel())
    f = np.repeat(mesh.faces.astype(np.int64) + 1, 2, axis=1)  # 1-based, vertex//normal
    f_lines = "f %d//%d %d//%d %d//%d\n" * len(f) % tuple(f.ravel())
    header = "# facerecon mesh: image pixels, y up, +z towards the viewer\n"
    return (header + v_lines + vn_lines + f_lines).encode("ascii")


def to_ply(mesh: Mesh) -> bytes:
    """Binary little-endian PLY with float positions and normals and uchar colours."""
    vertices, normals = _upright(mesh)
    fields = [(name, "<f4") for name in ("x", "y", "z", "nx", "ny", "nz")]
    if mesh.colors is not None:
        fields += [(name, "u1") for name in ("red", "green", "blue")]
    vertex = np.empty(mesh.num_vertices, dtype=fields)
    for i, name in enumerate(("x", "y", "z")):
        vertex[name] = vertices[:, i]
        vertex["n" + name] = normals[:, i]
    if mesh.colors is not None:
        for i, name in enumerate(("red", "green", "blue")):
            vertex[name] = mesh.colors[:, i]
    face = np.empty(mesh.num_faces, dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face["n"] = 3
    face["v"] = mesh.faces
    properties = "".join(
        f"property {'float' if kind == '<f4' else 'uchar'} {name}\n" for name, kind in fields
    )
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        "comment facerecon mesh: image pixels, y up, +z towards the viewer\n"
        f"element vertex {mesh.num_vertices}\n{properties}"
        f"element face {mesh.num_faces}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    return header.encode("ascii") + vertex.tobytes() + face.tobytes()


def to_glb(mesh: Mesh) -> bytes:
    """glTF 2.0 binary with POSITION, NORMAL and (when present) COLOR_0."""
    vertices, normals = _upright(mesh)
    colors = None
    if mesh.colors is not None:
        colors = np.hstack([mesh.colors, np.full((mesh.num_vertices, 1), 255, np.uint8)])
    return glb(vertices, normals, mesh.faces, colors=colors)


def glb(
    positions: np.ndarray,
    normals: np.ndarray,
    triangles: np.ndarray,
    *,
    colors: np.ndarray | None = None,
    uv: np.ndarray | None = None,
    texture_png: bytes | None = None,
) -> bytes:
    """glTF 2.0 binary of one triangle mesh, in the file frame (y up): (V, 3) positions and
    unit normals, (F, 3) vertex indices, and optionally (V, 4) uint8 RGBA colours or (V, 2)
    texture coordinates (v up, as in OBJ) with a PNG texture, embedded as is. Written with
    pygltflib: 4x faster than trimesh's exporter here, which would also re-encode the PNG."""
    arrays = [
        (np.asarray(positions, np.float32), gltf.FLOAT, gltf.VEC3),
        (np.asarray(normals, np.float32), gltf.FLOAT, gltf.VEC3),
    ]
    attributes = gltf.Attributes(POSITION=0, NORMAL=1)
    if colors is not None:
        attributes.COLOR_0 = len(arrays)
        arrays.append((np.asarray(colors, np.uint8), gltf.UNSIGNED_BYTE, gltf.VEC4))
    if uv is not None:
        attributes.TEXCOORD_0 = len(arrays)
        flipped = np.asarray(uv, np.float32) * [1.0, -1.0] + [0.0, 1.0]  # glTF's v runs down
        arrays.append((flipped.astype(np.float32), gltf.FLOAT, gltf.VEC2))
    indices = len(arrays)
    arrays.append((np.asarray(triangles, np.uint32).reshape(-1), gltf.UNSIGNED_INT, gltf.SCALAR))
    blob, views, accessors = bytearray(), [], []
    for number, (array, component, kind) in enumerate(arrays):
        target = gltf.ELEMENT_ARRAY_BUFFER if number == indices else gltf.ARRAY_BUFFER
        views.append(_view(blob, array.tobytes(), target))
        bounds = {}
        if number == 0:  # glTF requires the positions' bounds
            bounds = {"min": array.min(0).tolist(), "max": array.max(0).tolist()}
        accessors.append(gltf.Accessor(
            bufferView=number, componentType=component, count=len(array), type=kind,
            normalized=component == gltf.UNSIGNED_BYTE or None, **bounds,
        ))  # fmt: skip
    primitive = gltf.Primitive(attributes=attributes, indices=indices)
    document = gltf.GLTF2(
        scene=0,
        scenes=[gltf.Scene(nodes=[0])],
        nodes=[gltf.Node(mesh=0)],
        meshes=[gltf.Mesh(primitives=[primitive])],
        accessors=accessors,
        bufferViews=views,
    )
    if texture_png is not None:
        views.append(_view(blob, texture_png, None))
        document.images = [gltf.Image(bufferView=len(views) - 1, mimeType="image/png")]
        document.samplers = [
            gltf.Sampler(
                magFilter=gltf.LINEAR,
                minFilter=gltf.LINEAR,
                wrapS=gltf.CLAMP_TO_EDGE,
                wrapT=gltf.CLAMP_TO_EDGE,
            )
        ]
        document.textures = [gltf.Texture(sampler=0, source=0)]
        document.materials = [gltf.Material(pbrMetallicRoughness=gltf.PbrMetallicRoughness(
            baseColorTexture=gltf.TextureInfo(index=0), metallicFactor=0.0, roughnessFactor=0.9
        ))]  # fmt: skip
        primitive.material = 0
    document.buffers = [gltf.Buffer(byteLength=len(blob))]
    document.set_binary_blob(bytes(blob))
    return b"".join(document.save_to_bytes())


def _view(blob: bytearray, data: bytes, target: int | None) -> gltf.BufferView:
    """Append `data` to the binary chunk, 4-byte aligned as glTF wants; its buffer view."""
    view = gltf.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data), target=target)
    blob += data + bytes(-len(data) % 4)
    return view


def to_png(image: np.ndarray) -> bytes:
    """PNG of an RGB `(H, W, 3)` or RGBA `(H, W, 4)` uint8 image, at zlib level 1: 3x faster
    to encode than the default level (a 256-pixel view: 3 ms, not 9; the 512 x 1024 texture
    atlas: 33 ms, not 170) for 10-25 % more bytes."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected uint8 (H, W, 3|4), got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    mode = "RGBA" if image.shape[2] == 4 else "RGB"
    Image.fromarray(image, mode).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
