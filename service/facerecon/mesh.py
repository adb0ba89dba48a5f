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
from scipy.ndimage import distance_transform_edt, label
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from facerecon.volume import CoarseVolume

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


# A volume whose rays are not one solid interval each is meshed by marching cubes instead:
# a ray counts when it has more than GAP_VOXELS empty slices between its back-most and
# front-most solid ones, a volume when more than GAPPED_RAYS of its occupied rays do. The
# shipped network's volumes (measured on the coarse logits): 0.2 % of rays (median; at most
# 1.8 %) on 60 held-out synthetic faces, 0.5 % (at most 1.5 %) on 40 CFP photos; the few
# are behind the head, where the network is vague, not on the face.
GAP_VOXELS = 4
GAPPED_RAYS = 0.05
MIN_RUN = 3  # inside runs along d shorter than this (slices) are flicker, not solid


def surface_mesh(
    volume: np.ndarray | torch.Tensor | CoarseVolume,
    level: float = 0.5,
    step: int = 2,
) -> Mesh:
    """The service's mesh of a volume: `height_map_mesh`, or `volume_to_mesh` (marching
    cubes) when the volume is not one solid interval per ray."""
    mesh = height_map_mesh(volume, level, step)
    if mesh is None:
        full = volume.probability() if isinstance(volume, CoarseVolume) else volume
        return volume_to_mesh(full, level, step=step)
    return mesh


def height_map_mesh(
    volume: np.ndarray | torch.Tensor | CoarseVolume,
    level: float = 0.5,
    step: int = 2,
) -> Mesh | None:
    """The solid between a front and a back depth map as a closed mesh in crop space.

    The training targets are solid between the face's front and back surface on every ray
    (along d), so the surface is two height maps: on a grid of `step`-pixel cells, each ray's
    first crossing of `level` seen from the camera (the front) and from the back, to a
    fraction of a voxel by linear interpolation along d (no stair-steps in z). The grid's
    cells inside the silhouette are triangulated (three of a 2 x 2 quad give one triangle)
    for both surfaces, and a rim joins them along the silhouette; where the solid reaches
    the volume's border the surface closes half a voxel beyond it, as marching cubes on the
    zero-padded volume does. Only the largest 4-connected region of the silhouette is kept.

    A `CoarseVolume` (the network's 48 x 48 logits) is never upsampled to the full
    volume: the crossings are found on its columns and the depth maps upsampled bilinearly.

    Returns None when more than `GAPPED_RAYS` of the rays have a gap (not one interval),
    and an empty mesh when nothing exceeds `level`.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if isinstance(volume, CoarseVolume):
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        field = volume.logits - np.float32(np.log(level / (1.0 - level)))
        factor = volume.factor
    else:
        vol = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else volume
        vol = np.asarray(vol, dtype=np.float32)
        if vol.ndim != 3:
            raise ValueError(f"volume must be 3-D [d, y, x], got shape {vol.shape}")
        field = _pool_xy(vol, step) - np.float32(level)
    depth = field.shape[0]
    maps = _depth_maps(field)
    if maps is None:
        return _empty_mesh()
    front, back, silhouette, gapped, last = maps
    if gapped > GAPPED_RAYS:
        return None
    if isinstance(volume, CoarseVolume):  # sample the coarse maps at the grid's points
        rows = _grid(volume.shape[1], step, factor, field.shape[1])
        cols = _grid(volume.shape[2], step, factor, field.shape[2])
        coarse_last = last
        front, back, silhouette = (_bilinear(m, rows, cols) for m in (front, back, silhouette))
        front = _refine_front(field, coarse_last, rows, cols, front, silhouette > 0)
    ys = np.arange(front.shape[0]) * step + (step - 1) / 2.0  # grid points in crop pixels
    xs = np.arange(front.shape[1]) * step + (step - 1) / 2.0
    return _two_sided_mesh(silhouette > 0, front, back, ys, xs, depth)


def _empty_mesh() -> Mesh:
    return Mesh(np.zeros((0, 3)), np.zeros((0, 3)), normals=np.zeros((0, 3)))


def _pool_xy(volume: np.ndarray, step: int) -> np.ndarray:
    """Means over step x step pixels `(d, ceil(h / step), ceil(w / step))` (edge cells of a
    side that step does not divide average what they have)."""
    if step == 1:
        return volume
    d, h, w = volume.shape
    hs, ws = -(-h // step), -(-w // step)
    total = np.zeros((d, hs, ws), np.float32)
    count = np.zeros((hs, ws), np.float32)
    for i in range(step):
        for j in range(step):
            block = volume[:, i::step, j::step]
            total[:, : block.shape[1], : block.shape[2]] += block
            count[: block.shape[1], : block.shape[2]] += 1.0
    return total / count


def _depth_maps(field: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Per ray of `field` `(d, h, w)` (inside where > 0): the front and back crossings in
    slices (extended over empty rays from the nearest occupied one, for interpolation), the
    silhouette field (max over d: > 0 inside) and the fraction of occupied rays with a gap.
    None when nothing is inside."""
    depth = field.shape[0]
    # flicker (inside runs along d shorter than MIN_RUN slices) is not surface: a lone voxel
    # in front of the face would otherwise be taken for its front
    inside = _solid_runs(field > 0)
    occupied = inside.any(axis=0)
    if not occupied.any():
        return None
    first = inside.argmax(axis=0)  # the back-most occupied slice
    last = depth - 1 - inside[::-1].argmax(axis=0)  # the front-most
    count = inside.sum(axis=0)
    gap = (last - first + 1 - count)[occupied]
    gapped = float((gap > GAP_VOXELS).mean())

    def at(d: np.ndarray) -> np.ndarray:
        return np.take_along_axis(field, d[None], axis=0)[0]

    # linear interpolation to the zero between the last inside and the first outside slice;
    # at the border the outside is the zero-padding half a slice beyond it
    inner, outer = at(last), at(np.minimum(last + 1, depth - 1))
    front = np.where(last < depth - 1, last + inner / np.maximum(inner - outer, 1e-12),
                     depth - 0.5)  # fmt: skip
    inner, outer = at(first), at(np.maximum(first - 1, 0))
    back = np.where(first > 0, first - inner / np.maximum(inner - outer, 1e-12), -0.5)
    silhouette = field.max(axis=0)
    if not occupied.all():  # extend the depths over empty rays from the nearest occupied one
        nearest = distance_transform_edt(~occupied, return_distances=False, return_indices=True)
        front, back = front[tuple(nearest)], back[tuple(nearest)]
    last = np.where(occupied, last, -1)
    return front.astype(np.float32), back.astype(np.float32), silhouette, gapped, last


def _solid_runs(inside: np.ndarray) -> np.ndarray:
    """`inside` (d, h, w) without its runs along d shorter than MIN_RUN (an opening)."""
    n = MIN_RUN
    starts = inside[: len(inside) - n + 1].copy()  # slices that begin a run of n
    for k in range(1, n):
        starts &= inside[k : len(inside) - n + 1 + k]
    solid = np.zeros_like(inside)
    for k in range(n):
        solid[k : len(inside) - n + 1 + k] |= starts
    return solid


def _grid(full: int, step: int, factor: int, n: int) -> tuple[np.ndarray, ...]:
    """The grid's points (`step`-pixel cells of a `full`-pixel side) as positions on a coarse
    axis of `n` cells `factor` pixels wide (bilinear, align_corners=False, clamped): the two
    source indices and the weight of the second."""
    centres = np.arange(full // step) * step + (step - 1) / 2.0
    source = np.clip((centres + 0.5) / factor - 0.5, 0.0, n - 1)
    low = np.minimum(np.floor(source).astype(np.intp), n - 1)
    high = np.minimum(low + 1, n - 1)
    return low, high, (source - low).astype(np.float32)


REFINE_SLICES = 20  # the window of slices searched first for a grid point's crossing


def _refine_front(
    field: np.ndarray, last: np.ndarray, rows: tuple, cols: tuple, estimate: np.ndarray,
    mask: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The front crossing of the upsampled field itself at each grid point in `mask`, not the
    upsampled crossing: the grid point's column is the bilinear blend of four coarse
    columns, so beyond the front-most solid slice of all four it is outside, and its
    crossing lies at or below the most of them. The window from a little below the least of
    them is searched first (REFINE_SLICES long), the rest of the column where that finds
    nothing; a crossing needs MIN_RUN inside slices below it, as in `_depth_maps`."""
    depth, _, width = field.shape
    r0, r1, rw = rows
    c0, c1, cw = cols
    gy, gx = np.nonzero(mask)
    ry, rx = [r0[gy], r0[gy], r1[gy], r1[gy]], [c0[gx], c1[gx], c0[gx], c1[gx]]
    wy, wx = rw[gy], cw[gx]
    columns = np.stack([y * width + x for y, x in zip(ry, rx, strict=True)])  # (4, P)
    weights = np.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx])
    lasts = last.ravel()[columns]
    high = lasts.max(0)
    start = np.maximum(lasts.min(0) - MIN_RUN, 0)
    front = estimate.copy()
    todo = (high >= 0) & (high < depth - 1)  # at the border slice: the estimate
    flat = field.reshape(-1)
    plane = field.shape[1] * width
    for _ in range(2):  # the short window, then the rest of the column where it found nothing
        index = np.flatnonzero(todo)
        if index.size == 0:
            break
        first = start[index]
        window = min(REFINE_SLICES, depth) if _ == 0 else int((high[index] + 2 - first).max())
        slices = np.minimum(first[:, None] + np.arange(window), depth - 1)  # (P, W)
        gathered = flat[slices[None] * plane + columns[:, index, None]]  # (4, P, W)
        column = np.einsum("kpw,kp->pw", gathered, weights[:, index].astype(np.float32))
        inside = column > 0
        found = ~inside[:, 1:]  # a run of MIN_RUN inside slots, then an outside one
        for back in range(MIN_RUN):
            found[:, MIN_RUN - 1 :] &= inside[:, MIN_RUN - 1 - back : window - 1 - back]
        found[:, : MIN_RUN - 1] = False
        has = found.any(1)
        j = window - 2 - found[:, ::-1].argmax(1)  # the front-most such slot
        a = np.take_along_axis(column, j[:, None], 1)[:, 0]
        b = np.take_along_axis(column, j[:, None] + 1, 1)[:, 0]
        crossing = first + j + a / np.maximum(a - b, 1e-12)
        front[gy[index[has]], gx[index[has]]] = crossing[has]
        todo[index[has]] = False
        start = np.zeros_like(start)  # the second pass: whole columns up to the highest
    return front.astype(np.float32)


def _bilinear(values: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    """`values` (h, w) sampled at the grid's rows x cols (separable bilinear)."""
    r0, r1, rw = rows
    c0, c1, cw = cols
    along = values[:, c0] * (1.0 - cw) + values[:, c1] * cw
    return along[r0] * (1.0 - rw)[:, None] + along[r1] * rw[:, None]


def _two_sided_mesh(
    mask: np.ndarray, front: np.ndarray, back: np.ndarray, ys: np.ndarray, xs: np.ndarray,
    depth: int,
) -> Mesh:  # fmt: skip
    """Front and back height maps over `mask` (grid rows ys, columns xs) joined by a rim."""
    labels, count = label(mask)
    if count == 0:
        return _empty_mesh()
    if count > 1:
        mask = labels == np.bincount(labels.ravel())[1:].argmax() + 1
    rows, width = mask.shape
    grid = np.arange(rows * width).reshape(rows, width)
    # the 2 x 2 quads: corners a (top left), b (top right), c (bottom left), d (bottom right)
    a, b, c, d = grid[:-1, :-1], grid[:-1, 1:], grid[1:, :-1], grid[1:, 1:]
    ia, ib, ic, id_ = mask[:-1, :-1], mask[:-1, 1:], mask[1:, :-1], mask[1:, 1:]
    # counter-clockwise seen from +z in the y-up frame (rows grow downwards)
    triangles = np.concatenate([
        np.stack([a, c, d], -1)[ia & ic & id_],  # the diagonal a-d when all four are in
        np.stack([a, d, b], -1)[ia & id_ & ib],
        np.stack([c, d, b], -1)[~ia & ic & id_ & ib],  # three in: the one triangle
        np.stack([a, c, b], -1)[ia & ic & ib & ~id_],
    ])  # fmt: skip
    if len(triangles) == 0:
        return _empty_mesh()
    # the rim: edges in one front triangle only. Edges join grid neighbours, so an edge is
    # its lower grid index and its direction (right, down, down-right, down-left)
    u = triangles.ravel()
    v = triangles[:, [1, 2, 0]].ravel()
    step = np.abs(v - u)
    kind = np.select([step == 1, step == width, step == width + 1], [0, 1, 2], 3)
    key = np.minimum(u, v) * 4 + kind
    rim = np.bincount(key, minlength=4 * rows * width)[key] == 1
    u, v = u[rim], v[rim]
    # vertices: the grid points that some triangle uses, front then back
    used = np.zeros(rows * width, bool)
    used[triangles.ravel()] = True
    number = np.cumsum(used) - 1
    n = int(number[-1]) + 1
    front_faces, u, v = number[triangles], number[u], number[v]
    points = np.flatnonzero(used)
    r, col = points // width, points % width
    half = depth / 2.0
    near = np.stack([xs[col], ys[r], front.ravel()[points] - half], 1)
    far = np.stack([xs[col], ys[r], back.ravel()[points] - half], 1)
    wall_vertices, wall_faces = _wall(u, v, near, far, n, max(xs[1] - xs[0], 1.0) * WALL_SPACING)
    faces = np.concatenate([front_faces, front_faces[:, ::-1] + n, wall_faces])  # back: from -z
    return Mesh(np.concatenate([near, far, wall_vertices]), faces).with_normals()


WALL_SPACING = 4  # grid cells between the rim's vertices along z


def _wall(
    u: np.ndarray, v: np.ndarray, near: np.ndarray, far: np.ndarray, n: int, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """The rim between the front (vertices 0..n-1) and the back (n..2n-1) under the front's
    boundary edges u -> v: each rim vertex gets a column of vertices about `spacing` apart in
    z (long thin triangles would leave the wall without vertices, which nearest-vertex
    consumers of the mesh need), and each edge a ladder between two columns, facing
    outwards (to the right of u -> v). Returns the new vertices (numbered from 2n) and the
    wall's faces."""
    rim = np.unique(u)
    segments = np.zeros(n, np.int64)
    segments[rim] = np.maximum(np.ceil((near[rim, 2] - far[rim, 2]) / spacing), 1).astype(int)
    inner = np.where(segments > 1, segments - 1, 0)  # vertices strictly inside a column
    offset = 2 * n + np.cumsum(inner) - inner  # the first inner vertex of each column
    owner = np.repeat(np.arange(n), inner)
    t = (np.arange(len(owner)) - (offset[owner] - 2 * n) + 1) / segments[owner]
    vertices = near[owner] + (far[owner] - near[owner]) * t[:, None].astype(np.float32)

    def column(vertex: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Vertex k of `vertex`'s column: 0 the front, segments the back."""
        inside = np.where(k == segments[vertex], vertex + n, offset[vertex] + k - 1)
        return np.where(k == 0, vertex, inside)

    # walk both columns together in max(Ku, Kv) steps; a triangle whenever a side advances
    ku, kv = segments[u], segments[v]
    steps = np.maximum(ku, kv)
    edge = np.repeat(np.arange(len(u)), steps)
    k = np.arange(len(edge)) - np.repeat(np.cumsum(steps) - steps, steps)
    eu, ev, es = u[edge], v[edge], steps[edge]
    iu0, iu1 = (k * ku[edge]) // es, ((k + 1) * ku[edge]) // es
    iv0, iv1 = (k * kv[edge]) // es, ((k + 1) * kv[edge]) // es
    up, vp = iu1 > iu0, iv1 > iv0
    u0, u1, v0, v1 = column(eu, iu0), column(eu, iu1), column(ev, iv0), column(ev, iv1)
    faces = np.concatenate([
        np.stack([v0, u0, u1], 1)[up],  # down the u side
        np.stack([v0, u1, v1], 1)[vp],  # down the v side
    ])  # fmt: skip
    return vertices.astype(np.float32), faces


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
