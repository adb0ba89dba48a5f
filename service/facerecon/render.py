"""Batched z-buffer rasteriser in pure torch (CPU or CUDA): views of a mesh at (yaw, pitch).

Camera: orthographic, looking down -z of the y-up frame (DEVELOPERS.md). A view at
(yaw, pitch) shows the head rotated by `Rx(pitch) @ Ry(yaw)` about its vertex mean (after an
optional pre-rotation, e.g. the inverse of its estimated pose). All views of one mesh share
one scale: the bounding sphere spans `FILL` of the image.

Rasterisation is vectorised over views and triangles: every front-facing triangle lists the
pixel centres of its bounding box (triangles are grouped by box size, so a few large ones do
not pad the many tiny ones), keeps those inside, and the nearest wins a per-pixel
`scatter_reduce(amax)` on a key packing quantised depth above the triangle's index.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
from collections.abc import Sequence

import numpy as np
import torch

from facerecon.errors import InputError
from facerecon.mesh import FLIP_Y, Mesh
from facerecon.pose import Pose, rotation_matrix

FILL = 0.9  # bounding-sphere diameter / image side
AMBIENT, DIFFUSE = 0.35, 0.65  # light from the camera direction
GREY = 180  # albedo of meshes without colours
MAX_SIZE = 2048
_DEPTH_BITS = 31  # key = quantised depth << 32 | triangle index
_MAX_CANDIDATES = 1 << 22  # (triangle, pixel) pairs tested at once


def render_views(
    mesh: Mesh,
    angles: Sequence[tuple[float, float]],
    size: int = 256,
    background: tuple[int, int, int] | None = None,
    device: str | torch.device = "cpu",
    rotation: np.ndarray | None = None,
) -> np.ndarray:
    """RGBA uint8 images `(N, size, size, 4)`, one per (yaw, pitch) in degrees.

    The background is transparent (alpha 0) when `background` is None, else that opaque
    colour; the head has alpha 255. `rotation` (3x3, y-up frame; or (N, 3, 3), one per view)
    is applied before each view.
    """
    rotations = _view_rotations(angles, rotation)
    _check_size(size)
    _check_background(background)
    n, size = len(rotations), int(size)
    images = torch.zeros((n, size, size, 4), dtype=torch.uint8, device=device)
    if background is not None:
        images[..., :3] = torch.tensor(background, dtype=torch.uint8, device=device)
        images[..., 3] = 255
    if mesh.num_faces == 0:
        return images.cpu().numpy()

    points, normals, front = _camera_frame(mesh, rotations, size, device)
    albedo = (
        torch.from_numpy(mesh.colors).to(device, torch.float32)
        if mesh.colors is not None
        else torch.full((mesh.num_vertices, 3), float(GREY), device=device)
    )
    shade = AMBIENT + DIFFUSE * normals[..., 2].clamp(min=0.0)  # (N, V): Gouraud
    vertex_rgb = albedo[None] * shade[..., None]  # (N, V, 3)
    if torch.device(device).type == "cpu" and (gl := _gl_renderer()) is not None:
        return gl.render(points.numpy(), vertex_rgb.numpy(), mesh.faces, size, background)

    faces = torch.from_numpy(mesh.faces).to(device, torch.long)
    pixel, view_face, bary = _rasterize(points, faces, front, size)
    view, face = view_face // len(faces), view_face % len(faces)
    corners = faces[face] + (view * mesh.num_vertices)[:, None]  # into (N * V) vertices
    corner_rgb = vertex_rgb.reshape(-1, 3).index_select(0, corners.view(-1)).view(-1, 3, 3)
    rgb = torch.bmm(bary[:, None, :], corner_rgb)[:, 0]
    flat = images.view(-1, 4)
    flat[pixel, :3] = rgb.round().clamp(0, 255).to(torch.uint8)
    flat[pixel, 3] = 255
    return images.cpu().numpy()


def render_depth(
    mesh: Mesh,
    angles: Sequence[tuple[float, float]],
    size: int = 256,
    device: str | torch.device = "cpu",
    rotation: np.ndarray | None = None,
) -> np.ndarray:
    """Depth of the nearest surface `(N, size, size)` float32, NaN where nothing is seen.

    Depth is the rotated +z (towards the camera) relative to the mesh's centre, in mesh units.
    """
    rotations = _view_rotations(angles, rotation)
    _check_size(size)
    size = int(size)
    depth = torch.full((len(rotations) * size * size,), float("nan"), device=device)
    if mesh.num_faces == 0:
        return depth.view(-1, size, size).cpu().numpy()
    points, _, front = _camera_frame(mesh, rotations, size, device)
    faces = torch.from_numpy(mesh.faces).to(device, torch.long)
    pixel, view_face, bary = _rasterize(points, faces, front, size)
    view, face = view_face // len(faces), view_face % len(faces)
    corners = faces[face] + (view * mesh.num_vertices)[:, None]
    z = (points[..., 2].reshape(-1)[corners] * bary).sum(dim=1)
    depth[pixel] = z / _pixels_per_unit(mesh, size)
    return depth.view(-1, size, size).cpu().numpy()


def frontal_view(
    mesh: Mesh,
    pose: Pose,
    size: int = 256,
    background: tuple[int, int, int] | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """One RGBA image `(size, size, 4)` of the head turned to face the camera."""
    return render_views(mesh, [(0.0, 0.0)], size, background, device, pose.matrix().T)[0]


def _check_size(size: int) -> None:
    if not isinstance(size, numbers.Integral) or not 8 <= size <= MAX_SIZE:
        raise InputError(f"view size must be an integer in [8, {MAX_SIZE}]", field="view_size")


def _check_background(background: tuple[int, int, int] | None) -> None:
    if background is None:
        return
    try:
        valid = len(background) == 3 and all(int(c) == c and 0 <= c <= 255 for c in background)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InputError("background must be three integers in [0, 255]", field="background")


def _view_rotations(
    angles: Sequence[tuple[float, float]], rotation: np.ndarray | None
) -> np.ndarray:
    """(N, 3, 3) y-up-frame rotations: the view's `Rx(pitch) @ Ry(yaw)` after `rotation`
    (one 3x3 for every view, or one per view)."""
    pre = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    if pre.shape != (3, 3) and pre.shape != (len(angles), 3, 3):
        raise ValueError(f"rotation must be 3x3 or one 3x3 per view, got {pre.shape}")
    rotations = []
    for i, view in enumerate(angles):
        if len(view) != 2 or not all(math.isfinite(a) for a in view):
            raise InputError("each view needs a finite (yaw, pitch) in degrees", field="views")
        yaw, pitch = view
        rotations.append(rotation_matrix(yaw, pitch, 0.0) @ (pre if pre.ndim == 2 else pre[i]))
    if not rotations:
        raise InputError("at least one view is needed", field="views")
    return np.stack(rotations)


def _framing(mesh: Mesh) -> tuple[np.ndarray, float]:
    """Centre (y-up frame) and bounding-sphere radius about it. The vertex mean, unlike the
    bounding box's centre, turns with the mesh: views of a rotated mesh frame it the same."""
    v = mesh.vertices * FLIP_Y
    centre = v.mean(axis=0)
    radius = float(np.sqrt(((v - centre) ** 2).sum(axis=1).max()))
    return centre, max(radius, 1e-6)


def _pixels_per_unit(mesh: Mesh, size: int) -> float:
    return FILL * size / (2.0 * _framing(mesh)[1])


def _camera_frame(
    mesh: Mesh, rotations: np.ndarray, size: int, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vertices as (column, row, depth) pixels `(N, V, 3)`, unit vertex normals `(N, V, 3)`
    and, per view and face, whether the face turns towards the camera `(N, F)`."""
    centre, _ = _framing(mesh)
    scale = _pixels_per_unit(mesh, size)
    rot = torch.from_numpy(rotations).to(device, torch.float32)
    v = torch.from_numpy(mesh.vertices * FLIP_Y - centre).to(device, torch.float32)
    half = (size - 1) / 2.0  # pixel centres are at integers
    to_pixels = torch.tensor([scale, -scale, scale], device=device, dtype=torch.float32)
    to_pixels = to_pixels[:, None]  # scales the rows; y down
    points = torch.einsum("nij,vj->nvi", rot * to_pixels, v).contiguous()
    points += torch.tensor([half, half, 0.0], device=device)
    n = mesh.normals if mesh.normals is not None else mesh.with_normals().normals
    normals = torch.einsum("nij,vj->nvi", rot, torch.from_numpy(n * FLIP_Y).to(device))
    # faces are counter-clockwise in the y-up frame: their normals' z says which face us
    faces = torch.from_numpy(mesh.faces).to(device, torch.long)
    face_normals = torch.cross(
        v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]], dim=1
    )
    front = rot[:, 2, :] @ face_normals.T > 0
    return points, normals, front


def _rasterize(
    points: torch.Tensor, faces: torch.Tensor, front: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Visible surface per pixel.

    Returns, for every covered pixel: its flat index into (N, size, size), the index
    `view * F + face` of the nearest triangle there, and the pixel's barycentric weights.
    """
    n, device = points.shape[0], points.device
    num_faces, num_vertices = faces.shape[0], points.shape[1]
    ids = front.view(-1).nonzero().squeeze(1)  # view * F + face, back faces culled
    view_start = torch.arange(n, device=device).view(n, 1, 1) * num_vertices
    view_faces = (faces.view(1, -1, 3) + view_start).view(-1, 3)  # into (N * V) vertices
    corners = view_faces.index_select(0, ids).view(-1)
    tri = points.view(-1, 3).index_select(0, corners).view(-1, 3, 3)  # (T, corner, xyz)
    x, y = tri[..., 0], tri[..., 1]
    x0, x1 = _min3(x).ceil().clamp(min=0), _max3(x).floor().clamp(max=size - 1)
    y0, y1 = _min3(y).ceil().clamp(min=0), _max3(y).floor().clamp(max=size - 1)
    live = ((x0 <= x1) & (y0 <= y1)).nonzero().squeeze(1)  # covers some pixel centre
    if live.numel() == 0:  # nothing in view, or all between pixel centres
        nothing = torch.zeros(0, dtype=torch.long, device=device)
        return nothing, nothing, torch.zeros((0, 3), device=device)
    ids, tri, x0, x1, y0, y1 = (t[live] for t in (ids, tri, x0, x1, y0, y1))
    width = (x1 - x0).long() + 1
    height = (y1 - y0).long() + 1
    # edge functions are affine in the pixel position: E_i = twice the signed area of
    # (pixel, corner i+1, corner i+2), all <= 0 inside a front face, summing to its area;
    # coefficients are taken relative to each box's corner (x0, y0) to keep rounding small
    edges = _edge_coefficients(tri, x0, y0)  # (3: a, b, c, T, 3 corners)
    inverse_area = 1.0 / edges[2].sum(dim=1)
    tolerance = -1e-5 / inverse_area  # = 1e-5 * |area|: pixels on shared edges go to both
    depth = tri[..., 2] * inverse_area[:, None]  # (T, 3): E @ depth = interpolated depth
    corner = (ids // num_faces) * (size * size) + y0.long() * size + x0.long()  # flat pixel
    # group boxes by shape: exact up to 4 pixels (most triangles cover a few pixels),
    # powers of two above, so that each group enumerates few pixels outside its triangles
    bucket = _size_level(width) * _LEVELS + _size_level(height)

    depth_scale = ((1 << _DEPTH_BITS) - 1) / (2.0 * size)  # |depth| <= FILL * size / 2
    cand_pixel, cand_key = [], []
    for b in bucket.bincount().nonzero().squeeze(1).tolist():
        box_w, box_h = _LEVEL_SIDES[b // _LEVELS], _LEVEL_SIDES[b % _LEVELS]
        offset_y, offset_x = (
            t.reshape(-1)
            for t in torch.meshgrid(
                torch.arange(box_h, device=device),
                torch.arange(box_w, device=device),
                indexing="ij",
            )
        )
        dx, dy = offset_x.float().view(1, -1, 1), offset_y.float().view(1, -1, 1)
        offset = offset_y * size + offset_x  # (C,) flat pixel offsets from the box corner
        group = (bucket == b).nonzero().squeeze(1)
        # big boxes in chunks: memory stays bounded whatever the triangles' sizes
        for sel in group.split(max(1, _MAX_CANDIDATES // offset.numel())):
            e = _affine(edges.index_select(1, sel), dx, dy)  # (T, C, 3)
            furthest = torch.maximum(torch.maximum(e[..., 0], e[..., 1]), e[..., 2])
            inside = furthest <= tolerance[sel, None]
            if box_w > 4 or box_h > 4:  # power-of-two boxes overhang the triangle's own box
                inside &= (dx[..., 0] < width[sel, None]) & (dy[..., 0] < height[sel, None])
            flat = inside.view(-1).nonzero().squeeze(1)  # (triangle, candidate) pairs
            t_idx, c_idx = flat // offset.numel(), flat % offset.numel()
            hit = sel[t_idx]
            cand_pixel.append(corner[hit] + offset[c_idx])
            z = (e.view(-1, 3).index_select(0, flat) * depth.index_select(0, hit)).sum(dim=1)
            quantised = ((z + size) * depth_scale).long().clamp(0, (1 << _DEPTH_BITS) - 1)
            cand_key.append((quantised << 32) | hit)
    pixel = torch.cat(cand_pixel)
    key = torch.cat(cand_key)

    zbuffer = torch.full((n * size * size,), -1, dtype=torch.long, device=device)
    zbuffer.scatter_reduce_(0, pixel, key, reduce="amax")
    covered = (zbuffer >= 0).nonzero().squeeze(1)
    winner = zbuffer[covered] & 0xFFFFFFFF
    row = ((covered % (size * size)) // size).float() - y0[winner]
    col = (covered % size).float() - x0[winner]
    e = _affine(edges.index_select(1, winner), col[:, None, None], row[:, None, None])[:, 0]
    return covered, ids[winner], (e * inverse_area[winner, None]).clamp(min=0.0)


_LEVEL_SIDES = [1, 2, 3, 4] + [1 << k for k in range(3, 12)]  # box sides up to MAX_SIZE
_LEVELS = len(_LEVEL_SIDES)


def _size_level(side: torch.Tensor) -> torch.Tensor:
    """Index into `_LEVEL_SIDES` of the smallest side >= `side`."""
    pow2 = torch.ceil(torch.log2(side.float())).long() + 1  # index of 2^k is k + 1 for k >= 2
    return torch.where(side <= 4, side - 1, pow2)


def _min3(t: torch.Tensor) -> torch.Tensor:
    return torch.minimum(torch.minimum(t[:, 0], t[:, 1]), t[:, 2])


def _max3(t: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.maximum(t[:, 0], t[:, 1]), t[:, 2])


def _edge_coefficients(tri: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """Edge functions `a * dx + b * dy + c` of (dx, dy) = pixel - (x0, y0): for corner i,
    twice the signed area of (pixel, corner i+1, corner i+2). Returns `(3: a, b, c, T, 3)`."""
    x = (tri[..., 0] - x0[:, None]).T  # (corner, T): contiguous rows below
    y = (tri[..., 1] - y0[:, None]).T
    per_corner = [
        torch.stack([y[j] - y[k], x[k] - x[j], x[j] * y[k] - x[k] * y[j]])  # (3: a, b, c, T)
        for j, k in ((1, 2), (2, 0), (0, 1))  # the corners after corners 0, 1, 2
    ]
    return torch.stack(per_corner, dim=-1)


def _affine(coefficients: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """`a * dx + b * dy + c` for `coefficients` (3, T, K) at offsets broadcasting to
    (T, C, 1): returns `(T, C, K)`."""
    a, b, c = coefficients[:, :, None, :]
    return a * dx + b * dy + c


# --- OpenGL (Mesa's llvmpipe through EGL, no display) ------------------------------------------

RENDERERS = ("auto", "gl", "torch")
_gl_local = threading.local()


def _gl_renderer() -> _GLRenderer | None:
    """This thread's OpenGL renderer (a GL context is bound to the thread that made it), or
    None where $FACERECON_RENDERER is "torch" or no headless context can be made (no
    moderngl, no EGL): `render_views` then rasterises in torch."""
    choice = os.environ.get("FACERECON_RENDERER", "auto")
    if choice not in RENDERERS:
        raise ValueError(f"FACERECON_RENDERER must be one of {RENDERERS}, got {choice!r}")
    if choice == "torch":
        return None
    renderer = getattr(_gl_local, "renderer", False)
    if renderer is False:
        try:
            renderer = _GLRenderer()
        except Exception:  # noqa: BLE001 - any failure to make a context: the torch path
            if choice == "gl":
                raise
            renderer = None
        _gl_local.renderer = renderer
    return renderer


class _GLRenderer:
    """The same pictures as the torch rasteriser (orthographic, Gouraud colours per vertex,
    back faces culled, nearest surface wins, pixel centres sampled), by OpenGL: all views of
    a call go into one framebuffer, side by side, and come back in one read."""

    VERTEX = """#version 330
        uniform vec2 scale;
        in vec3 position;  // column, row, depth in pixels (depth: +z towards the camera)
        in vec3 color;
        out vec3 rgb;
        void main() {
            gl_Position = vec4((position.x + 0.5) * scale.x - 1.0,
                               1.0 - (position.y + 0.5) * scale.y,
                               -position.z * scale.y * 0.5, 1.0);
            rgb = color;
        }"""
    FRAGMENT = """#version 330
        in vec3 rgb;
        out vec4 colour;
        void main() { colour = vec4(rgb / 255.0, 1.0); }"""

    def __init__(self) -> None:
        import moderngl

        self.gl = moderngl
        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.program = self.ctx.program(vertex_shader=self.VERTEX, fragment_shader=self.FRAGMENT)
        self.targets: dict[tuple[int, int], object] = {}

    def render(
        self, points: np.ndarray, rgb: np.ndarray, faces: np.ndarray, size: int,
        background: tuple[int, int, int] | None,
    ) -> np.ndarray:  # fmt: skip
        """(N, V, 3) pixel positions and (N, V, 3) colours in 0..255 -> (N, size, size, 4)."""
        with self.ctx:  # current on this thread, whatever other context was made since
            return self._render(points, rgb, faces, size, background)

    def _render(
        self, points: np.ndarray, rgb: np.ndarray, faces: np.ndarray, size: int,
        background: tuple[int, int, int] | None,
    ) -> np.ndarray:  # fmt: skip
        n = len(points)
        ctx = self.ctx
        fbo = self._target(size, n)
        fbo.use()
        clear = (
            (0.0, 0.0, 0.0, 0.0) if background is None else (*(c / 255 for c in background), 1.0)
        )
        fbo.clear(*clear, depth=1.0)
        ctx.enable(self.gl.DEPTH_TEST | self.gl.CULL_FACE)
        self.program["scale"].value = (2.0 / size, 2.0 / size)
        index = ctx.buffer(np.ascontiguousarray(faces, dtype=np.int32))
        data = np.concatenate([points, rgb], axis=2).astype(np.float32)  # (N, V, 6)
        buffer = ctx.buffer(reserve=data[0].nbytes)
        vao = ctx.vertex_array(self.program, [(buffer, "3f 3f", "position", "color")], index,
                               index_element_size=4)  # fmt: skip
        for view in range(n):
            buffer.write(data[view])
            ctx.viewport = (view * size, 0, size, size)
            vao.render(self.gl.TRIANGLES)
        pixels = np.frombuffer(fbo.read(components=4, alignment=1), np.uint8)
        for resource in (vao, buffer, index):
            resource.release()
        # rows come bottom-up; the views lie side by side
        images = pixels.reshape(size, n, size, 4)[::-1].transpose(1, 0, 2, 3)
        return np.ascontiguousarray(images)

    def _target(self, size: int, n: int):
        key = (size, n)
        if key not in self.targets:
            if len(self.targets) > 8:  # sizes vary per request: keep a few
                for fbo in self.targets.values():
                    fbo.release()
                self.targets.clear()
            ctx = self.ctx
            self.targets[key] = ctx.framebuffer(
                ctx.renderbuffer((size * n, size)), ctx.depth_renderbuffer((size * n, size))
            )
        return self.targets[key]
