"""A UV texture for a registered face, sampled from the photo; textured OBJ and GLB files.

The ICT model's texture coordinates use two UDIM tiles (the face in u in [0, 1), the head and
neck in [1, 2)); the atlas puts them side by side, so it is `size` high and `2 * size` wide
and `Registration.uv` holds u / 2.

`bake_texture` fills every texel of the atlas that the mesh uses:
1. where the surface point is visible in the photo (faces the camera and is not behind
   another part of the face: a z-buffer of the registered mesh), the photo's colour there;
2. where it is hidden but its mirror image across the face's symmetry plane is visible (the
   ICT topology is symmetric: `FaceModel.mirror`), the colour of the mirror point;
3. the rest (the back of the head, both sides hidden) by diffusion (`cv2.inpaint`) from the
   filled texels, on a coarser grid: those regions carry no detail anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache

import cv2
import numpy as np
import scipy.sparse
import torch

from facerecon.export import glb
from facerecon.face_model import FaceModel
from facerecon.mesh import FLIP_Y, Mesh
from facerecon.registration import Registration, single_threaded
from facerecon.render import _rasterize

TEXTURE_SIZE = 512
FACING_MIN = 0.15  # cosine between a surface normal and the view direction to take colour
DEPTH_TOLERANCE = 1.5  # z-buffer slack, in z-buffer pixels
ZBUFFER_SIZE = 256  # z-buffer resolution across the face's longer side
INPAINT_SIZE = 64  # grid on which unseen regions are diffused (128: 4x the time, no visible gain)


def bake_texture(
    registration: Registration,
    image: np.ndarray,
    face_model: FaceModel,
    size: int = TEXTURE_SIZE,
) -> np.ndarray:
    """(size, 2 * size, 3) uint8 RGB atlas for `registration`'s mesh, from the photo."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    with single_threaded():  # the rasteriser's many small ops (see registration.py)
        return _bake(registration, image, face_model, size)


def _bake(
    registration: Registration, image: np.ndarray, face_model: FaceModel, size: int
) -> np.ndarray:
    texels, blend = _texel_blend(face_model, size)
    normals = registration.to_mesh().normals
    visible = _visibility(registration)

    texture = np.zeros((size * 2 * size, 3), np.uint8)
    filled = np.zeros(size * 2 * size, bool)
    limit = np.array([image.shape[1] - 1, image.shape[0] - 1])
    mirror = face_model.mirror.cpu().numpy()
    for vertex_of in (slice(None), mirror):  # the texel's own point, then its mirror
        points = blend @ registration.vertices[vertex_of]
        normal = blend @ normals[vertex_of]
        x, y, facing = points[:, 0], points[:, 1], normal[:, 2]
        seen = ~filled[texels] & (facing > 0)
        seen &= facing**2 > FACING_MIN**2 * np.einsum("ij,ij->i", normal, normal)
        seen &= (x >= 0) & (x <= limit[0]) & (y >= 0) & (y <= limit[1])  # in the photo
        seen[seen] = visible(points[seen])
        target = texels[seen]
        texture[target] = _bilinear(image, points[seen, :2])
        filled[target] = True

    return _diffuse(texture.reshape(size, 2 * size, 3), filled.reshape(size, 2 * size))


def prepare_atlas(face_model: FaceModel, size: int = TEXTURE_SIZE) -> None:
    """Rasterise the model's UV layout now (once per model and size, ~1 s) rather than in
    the first `bake_texture` call."""
    with single_threaded():
        _texel_blend(face_model, size)


@lru_cache(maxsize=4)
def _texel_blend(model: FaceModel, size: int) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:
    """`_uv_raster` as the texels' flat indices and a (T, V) sparse matrix of barycentric
    weights: `blend @ vertex_values` interpolates any per-vertex quantity at every texel
    (one sparse product instead of a (T, 3, 3) gather: 20x faster)."""
    texels, triangle, weights = _uv_raster(model, size)
    corners = model.triangles.cpu().numpy()[triangle]  # (T, 3) vertex indices
    rows = np.repeat(np.arange(len(texels)), 3)
    blend = scipy.sparse.csr_matrix(
        (weights.ravel(), (rows, corners.ravel())), shape=(len(texels), model.num_vertices)
    )
    return texels, blend


@lru_cache(maxsize=4)
def _uv_raster_cached(
    size: int, uv: bytes, faces: bytes
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    uv_array = np.frombuffer(uv, np.float32).reshape(-1, 2)
    uv_faces = np.frombuffer(faces, np.int64).reshape(-1, 3)
    # texel centres are at integers: u in [0, 2) spans 2 * size columns, v = 1 is row 0
    pixels = np.stack([uv_array[:, 0] * size - 0.5, (1.0 - uv_array[:, 1]) * size - 0.5], 1)
    a, b, c = (pixels[uv_faces[:, k]] for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    order = np.where((area > 0)[:, None], [0, 2, 1], [0, 1, 2])  # one winding for the raster
    uv_faces = np.take_along_axis(uv_faces, order, 1)
    points = torch.from_numpy(np.hstack([pixels, np.zeros((len(pixels), 1))]).astype(np.float32))
    front = torch.ones(1, len(uv_faces), dtype=torch.bool)
    side = 2 * size  # the rasteriser draws squares; the atlas is the top half
    texel, face, weights = _rasterize(points[None], torch.from_numpy(uv_faces), front, side)
    row, column = texel // side, texel % side
    keep = row < size
    texel = (row * 2 * size + column)[keep].numpy()
    face = face[keep].numpy()
    weights = np.take_along_axis(weights[keep].numpy(), np.argsort(order[face], 1), 1)
    return texel, face, weights.astype(np.float32)


def _uv_raster(model: FaceModel, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every atlas texel the mesh covers: its flat index, triangle and barycentric
    weights over the triangle's corners in `triangles` order. Computed once per model."""
    uv = model.uv.cpu().numpy().astype(np.float32)
    faces = model.triangle_uvs.cpu().numpy().astype(np.int64)
    return _uv_raster_cached(size, uv.tobytes(), faces.tobytes())


def _visibility(registration: Registration) -> Callable[[np.ndarray], np.ndarray]:
    """A test of which (N, 3) image-frame surface points the camera sees (a z-buffer)."""
    vertices = registration.vertices.astype(np.float64)
    # the rasteriser keeps depths within +-size of 0: measure them from the mean
    lo = np.append(vertices[:, :2].min(0), vertices[:, 2].mean())
    factor = (ZBUFFER_SIZE - 1) / max(np.ptp(vertices[:, :2], 0).max(), 1e-6)
    points = (vertices - lo) * factor
    faces = registration.triangles.astype(np.int64)
    up = vertices * FLIP_Y
    normal_z = np.cross(up[faces[:, 1]] - up[faces[:, 0]], up[faces[:, 2]] - up[faces[:, 0]])[:, 2]
    size = ZBUFFER_SIZE
    pixel, face, weights = _rasterize(
        torch.from_numpy(points.astype(np.float32))[None],
        torch.from_numpy(faces),
        torch.from_numpy(normal_z > 0)[None],
        size,
    )
    depth = np.full(size * size, -np.inf, np.float32)
    corner_z = points[:, 2][faces[face.numpy()]]
    depth[pixel.numpy()] = (corner_z * weights.numpy()).sum(1)
    depth = depth.reshape(size, size)

    def visible(query: np.ndarray) -> np.ndarray:
        q = (query - lo) * factor
        column = np.clip(np.rint(q[:, 0]).astype(np.intp), 0, size - 1)
        row = np.clip(np.rint(q[:, 1]).astype(np.intp), 0, size - 1)
        return q[:, 2] >= depth[row, column] - DEPTH_TOLERANCE

    return visible


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Colours (N, C) uint8 of a uint8 image at (N, 2) pixel positions, edges clamped (by
    OpenCV's remap: 5x faster than numpy's gathers). Remap takes images under 32,767 pixels
    a side, so a larger one (a panorama) is sampled tile by tile."""
    if max(image.shape[:2]) < _REMAP_LIMIT:
        return _remap(image, xy)
    out = np.empty((len(xy), image.shape[2]), image.dtype)
    tile = _REMAP_LIMIT // 2  # each tile with its right and bottom neighbours' first pixel
    cells = (np.clip(xy, 0, None) // tile).astype(np.intp)
    for cell in np.unique(cells, axis=0):
        here = (cells == cell).all(1)
        (x0, y0), (x1, y1) = cell * tile, (cell + 1) * tile + 1
        out[here] = _remap(image[y0 : y1 + 1, x0 : x1 + 1], xy[here] - (x0, y0))
    return out


def _remap(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    rows = max(1, -(-len(xy) // _REMAP_WIDTH))  # maps are limited to 32,767 a side too
    maps = np.zeros((2, rows * _REMAP_WIDTH), np.float32)
    maps[:, : len(xy)] = xy.T
    sampled = cv2.remap(
        image,
        maps[0].reshape(rows, _REMAP_WIDTH),
        maps[1].reshape(rows, _REMAP_WIDTH),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return sampled.reshape(-1, image.shape[2])[: len(xy)]


_REMAP_LIMIT = 32767  # OpenCV's SHRT_MAX: remap's largest image and map side
_REMAP_WIDTH = 1024


def _diffuse(texture: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Fill the unfilled texels (black in `texture`) by inpainting on a coarse grid: hidden
    regions, and texels no triangle uses, so that texture filtering at chart edges bleeds
    nothing."""
    height, width = filled.shape
    small = (INPAINT_SIZE * width // height, INPAINT_SIZE)
    colours = cv2.resize(texture.astype(np.float32), small, interpolation=cv2.INTER_AREA)
    coverage = cv2.resize(filled.astype(np.float32), small, interpolation=cv2.INTER_AREA)
    known = coverage > 0.05
    average = np.where(known[..., None], colours / np.maximum(coverage, 1e-6)[..., None], 0)
    if known.any():
        holes = (~known).astype(np.uint8)
        average = cv2.inpaint(
            np.clip(average, 0, 255).astype(np.uint8), holes, 3, cv2.INPAINT_TELEA
        )
    else:
        average = np.full((*small[::-1], 3), 128, np.uint8)
    out = cv2.resize(average, (width, height), interpolation=cv2.INTER_LINEAR)
    np.copyto(out, texture, where=filled[..., None])
    return out


def registered_mesh(registration: Registration, texture: np.ndarray) -> Mesh:
    """The registered mesh with per-vertex colours from its atlas, for the rasteriser (which
    shades vertex colours): each vertex takes the texel under one of its texture coordinates
    (a vertex on a UV seam has several, all showing the same surface point)."""
    corner_uv = np.zeros(len(registration.vertices), np.intp)  # (a vertex in no triangle: 0)
    corner_uv[registration.triangles.ravel()] = registration.triangle_uvs.ravel()
    u, v = registration.uv[corner_uv].T  # 0..1 across the atlas, v up
    height, width = texture.shape[:2]
    xy = np.stack([u * width - 0.5, (1.0 - v) * height - 0.5], axis=1)
    colors = _bilinear(texture, xy)
    return replace(registration.to_mesh(), colors=colors)


def _upright_vertices(registration: Registration) -> np.ndarray:
    return (registration.vertices * FLIP_Y).astype(np.float32)


def to_textured_obj(
    registration: Registration, texture_png: bytes, name: str = "face"
) -> dict[str, bytes]:
    """`{name}.obj`, `{name}.mtl` and `{name}.png` (the atlas, encoded by
    `facerecon.export.to_png`) as bytes (y up, like facerecon.export)."""
    vertices = _upright_vertices(registration)
    uv = registration.uv
    faces = np.stack([registration.triangles, registration.triangle_uvs], -1) + 1  # (F, 3, 2)
    lines = [
        "# facerecon registered face (ICT topology): image pixels, y up, +z to the viewer\n",
        f"mtllib {name}.mtl\n",
        "v %.4f %.4f %.4f\n" * len(vertices) % tuple(vertices.ravel()),
        "vt %.6f %.6f\n" * len(uv) % tuple(uv.ravel()),
        f"usemtl {name}\n",
        "f %d/%d %d/%d %d/%d\n" * len(faces) % tuple(faces.reshape(-1)),
    ]
    material = f"newmtl {name}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {name}.png\n"
    return {
        f"{name}.obj": "".join(lines).encode("ascii"),
        f"{name}.mtl": material.encode("ascii"),
        f"{name}.png": texture_png,
    }


def to_textured_glb(registration: Registration, texture_png: bytes) -> bytes:
    """glTF 2.0 binary (y up, like facerecon.export): a vertex per (vertex, texture
    coordinate) pair, with the mesh's normals (smooth across UV seams) and the atlas
    (PNG) as its baseColorTexture."""
    corners = np.stack([registration.triangles, registration.triangle_uvs], -1).reshape(-1, 2)
    pairs, indices = np.unique(corners, axis=0, return_inverse=True)
    normals = registration.to_mesh().normals * FLIP_Y
    return glb(
        _upright_vertices(registration)[pairs[:, 0]],
        normals[pairs[:, 0]],
        indices.reshape(-1, 3),
        uv=registration.uv[pairs[:, 1]],
        texture_png=texture_png,
    )
