"""Triangle meshes: occupancy volume -> surface, smoothing, normals, colours, decimation.

Frames (see DEVELOPERS.md): `volume_to_mesh` returns *crop space* (x, y = crop pixels,
z = d - D/2, +z towards the camera); `to_image_space` maps that to the original image's
pixels. Both are y-down frames; faces are wound counter-clockwise seen from outside once y
is flipped to point up, and normals point outwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

FLIP_Y = np.array([1.0, -1.0, 1.0], dtype=np.float32)  # mesh frame (y down) <-> y-up frame


@dataclass
class Mesh:
    """A triangle mesh in a y-down pixel frame (see the module docstring); arrays are
    coerced to the dtypes below and checked on construction."""

    vertices: np.ndarray  # float32 (V, 3)
    faces: np.ndarray  # int32 (F, 3)
    colors: np.ndarray | None = None  # uint8 (V, 3)
    normals: np.ndarray | None = None  # float32 (V, 3), unit, outwards

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must be (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"faces must be (F, 3), got {self.faces.shape}")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError("faces index vertices that do not exist")
        if self.colors is not None:
            self.colors = np.ascontiguousarray(self.colors, dtype=np.uint8)
            if self.colors.shape != self.vertices.shape:
                raise ValueError(f"colors must be (V, 3), got {self.colors.shape}")
        if self.normals is not None:
            self.normals = np.ascontiguousarray(self.normals, dtype=np.float32)
            if self.normals.shape != self.vertices.shape:
                raise ValueError(f"normals must be (V, 3), got {self.normals.shape}")

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def transformed(self, scale: float = 1.0, offset: np.ndarray | None = None) -> Mesh:
        """`scale * vertices + offset` (a uniform scale keeps normals and winding valid)."""
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        vertices = self.vertices * np.float32(scale)
        if offset is not None:
            vertices = vertices + np.asarray(offset, dtype=np.float32)
        return Mesh(vertices, self.faces, self.colors, self.normals)

    def with_normals(self) -> Mesh:
        """The same mesh with freshly computed vertex normals."""
        return Mesh(self.vertices, self.faces, self.colors, vertex_normals(self))

    def signed_volume(self) -> float:
        """Enclosed volume in the y-up frame: positive when faces are wound as documented."""
        v = self.vertices.astype(np.float64) * FLIP_Y
        a, b, c = v[self.faces[:, 0]], v[self.faces[:, 1]], v[self.faces[:, 2]]
        return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def vertex_normals(mesh: Mesh) -> np.ndarray:
    """Area-weighted unit vertex normals, pointing outwards, in the mesh's (y-down) frame."""
    v = mesh.vertices * FLIP_Y  # the winding is counter-clockwise in the y-up frame
    f = mesh.faces
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    face_normals = np.cross(b - a, c - a)  # length = twice the area
    normals = np.zeros_like(v)
    for corner in range(3):  # numpy, not torch: torch's threads stall on a busy machine
        for axis in range(3):
            normals[:, axis] += np.bincount(f[:, corner], face_normals[:, axis], len(v))
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return normals * FLIP_Y


def volume_to_mesh(
    volume: np.ndarray | torch.Tensor,
    level: float = 0.5,
    smooth_iterations: int = 3,
    step: int = 2,
) -> Mesh:
    """The iso-surface of an occupancy volume `[d, y, x]` as a closed mesh in crop space.

    `step` averages step^3 voxel blocks before marching cubes: the full 1-voxel surface of a
    head has ~200k triangles, more than a 256-pixel view can show, and costs 4x the time.
    Only the largest connected component is kept, then lightly Taubin-smoothed. An empty
    mesh comes back when no voxel (or no averaged block) exceeds `level`.
    """
    vol = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else volume
    vol = np.asarray(vol, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-D [d, y, x], got shape {vol.shape}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    depth = vol.shape[0]

    occupied = vol > level
    d_range = np.flatnonzero(occupied.reshape(depth, -1).any(axis=1))
    if d_range.size == 0:  # nothing above the level: an empty mesh
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3)), normals=np.zeros((0, 3)))
    yx = occupied[d_range[0] : d_range[-1] + 1].any(axis=0)
    y_range, x_range = np.flatnonzero(yx.any(axis=1)), np.flatnonzero(yx.any(axis=0))
    lo = np.array([d_range[0], y_range[0], x_range[0]])
    hi = np.array([d_range[-1], y_range[-1], x_range[-1]]) + 1
    grid = block_means(vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], step)
    if grid.max() <= level:  # a few stray voxels that averaging dissolves: still nothing
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3)), normals=np.zeros((0, 3)))

    # degenerate triangles need samples exactly at `level`: rare and harmless, not worth 25%
    verts, faces, _, _ = marching_cubes(grid, level)
    # back to voxel indices (a block's centre), then crop space (x, y, z = d - D/2)
    idx = lo + step * (verts - 1) + (step - 1) / 2.0
    vertices = np.stack([idx[:, 2], idx[:, 1], idx[:, 0] - depth / 2.0], axis=1)
    # scikit-image winds faces clockwise in our y-up frame (its (d, y, x) order is mirrored)
    mesh = Mesh(vertices, faces[:, ::-1])

    mesh, adjacency = _largest_component(mesh, _adjacency(len(vertices), mesh.faces))
    if smooth_iterations > 0:
        mesh = taubin_smooth(mesh, smooth_iterations, adjacency)
    return mesh.with_normals()


def block_means(sub: np.ndarray, step: int) -> np.ndarray:
    """Means of step^3 blocks (the 0.5 iso-surface of a coarser occupancy), zero-padded by one
    cell all round so that the surface is closed where the head meets the crop border."""
    shape = [-(-n // step) for n in sub.shape]
    grid = np.zeros([n + 2 for n in shape], dtype=np.float32)
    inner = grid[1:-1, 1:-1, 1:-1]
    for i in range(step):  # strided sums: no temporary copy of the volume
        for j in range(step):
            for k in range(step):
                block = sub[i::step, j::step, k::step]
                inner[: block.shape[0], : block.shape[1], : block.shape[2]] += block
    inner *= 1.0 / step**3
    return grid


def _adjacency(num_vertices: int, faces: np.ndarray) -> sp.csr_matrix:
    """Symmetric 0/1 vertex adjacency from triangle edges."""
    rows = faces.ravel()
    cols = faces[:, [1, 2, 0]].ravel()
    ones = np.ones(2 * len(rows), dtype=np.float32)
    adj = sp.csr_matrix(
        (ones, (np.concatenate([rows, cols]), np.concatenate([cols, rows]))),
        shape=(num_vertices, num_vertices),
    )
    adj.data[:] = 1.0  # duplicate edges were summed
    return adj


def largest_component(mesh: Mesh) -> Mesh:
    """The connected component with the most vertices (spurious blobs are dropped)."""
    return _largest_component(mesh, _adjacency(mesh.num_vertices, mesh.faces))[0]


def _largest_component(mesh: Mesh, adjacency: sp.csr_matrix) -> tuple[Mesh, sp.csr_matrix]:
    if mesh.num_faces == 0:
        return mesh, adjacency
    _, labels = connected_components(adjacency, directed=False)
    keep = labels == np.bincount(labels).argmax()
    if keep.all():
        return mesh, adjacency
    new_index = np.cumsum(keep) - 1
    faces = new_index[mesh.faces[keep[mesh.faces[:, 0]]]]
    colors = mesh.colors[keep] if mesh.colors is not None else None
    normals = mesh.normals[keep] if mesh.normals is not None else None
    return Mesh(mesh.vertices[keep], faces, colors, normals), adjacency[keep][:, keep]


def taubin_smooth(
    mesh: Mesh,
    iterations: int,
    adjacency: sp.csr_matrix | None = None,
    lam: float = 0.5,
    mu: float = -0.53,
) -> Mesh:
    """Taubin lambda/mu smoothing: removes voxel stair-steps without shrinking the surface."""
    if adjacency is None:
        adjacency = _adjacency(mesh.num_vertices, mesh.faces)
    mean_of_neighbours = adjacency.astype(np.float32)  # a copy, rows scaled below
    degree = np.diff(mean_of_neighbours.indptr)
    mean_of_neighbours.data /= np.repeat(np.maximum(degree, 1), degree).astype(np.float32)
    v = mesh.vertices.copy()
    for _ in range(iterations):
        v += lam * (mean_of_neighbours @ v - v)
        v += mu * (mean_of_neighbours @ v - v)
    return Mesh(v, mesh.faces, mesh.colors, None)


def to_image_space(mesh: Mesh, scale: float, tx: float, ty: float) -> Mesh:
    """Crop space -> image pixels: the inverse of `crop = scale * image + t`, z / scale."""
    if not scale > 0:
        raise ValueError(f"crop scale must be positive, got {scale}")
    offset = np.array([-tx / scale, -ty / scale, 0.0], dtype=np.float32)
    return mesh.transformed(1.0 / scale, offset)


def sample_colors(mesh: Mesh, image: np.ndarray) -> Mesh:
    """Per-vertex colours: the image bilinearly sampled at each vertex's (x, y), clamped."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    x = np.clip(mesh.vertices[:, 0], 0, width - 1)
    y = np.clip(mesh.vertices[:, 1], 0, height - 1)
    x0 = np.minimum(np.floor(x).astype(np.intp), width - 2) if width > 1 else np.zeros_like(x, int)
    y0 = (
        np.minimum(np.floor(y).astype(np.intp), height - 2) if height > 1 else np.zeros_like(y, int)
    )
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image.astype(np.float32)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    colors = np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)
    return Mesh(mesh.vertices, mesh.faces, colors, mesh.normals)


def decimate(mesh: Mesh, target_faces: int) -> Mesh:
    """Quadric-error decimation to about `target_faces`; colours from the nearest old vertex."""
    import fast_simplification  # imported here: only export paths that shrink meshes need it

    if target_faces < 4:
        raise ValueError(f"target_faces must be >= 4, got {target_faces}")
    if mesh.num_faces <= target_faces:
        return mesh
    vertices, faces = fast_simplification.simplify(
        mesh.vertices, mesh.faces, target_reduction=1.0 - target_faces / mesh.num_faces
    )
    colors = None
    if mesh.colors is not None:
        _, nearest = cKDTree(mesh.vertices).query(vertices)
        colors = mesh.colors[nearest]
    return Mesh(vertices, faces, colors).with_normals()
