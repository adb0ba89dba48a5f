"""A batched point-splatting rasteriser: front/back depth, triangle id and barycentrics.

Every triangle is sampled on a barycentric grid fine enough (spacing below `SPACING`
pixels) that each pixel it covers receives a sample; samples are z-buffered with
`scatter_reduce`. This needs no per-triangle loops and runs the same on CPU and CUDA.
The winner's barycentrics are then recomputed exactly at the pixel centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

SPACING = 0.7  # pixels between samples along a triangle's longest edge
MAX_SUBDIVISIONS = 64  # larger triangles are clamped (only far out of the crop)
Z_STEPS = 64.0  # z-buffer resolution: 1/64 pixel
TRI_BITS = 20  # triangle index bits of the packed z-buffer key


@dataclass
class Raster:
    triangle: torch.Tensor  # (B, H, W) long; -1 where no surface
    front: torch.Tensor  # (B, H, W) largest z (nearest the camera); -inf where empty
    back: torch.Tensor  # (B, H, W) smallest z (farthest from the camera); +inf where empty
    barycentric: torch.Tensor  # (B, H, W, 3) of the nearest triangle at each pixel centre

    @property
    def mask(self) -> torch.Tensor:
        return self.triangle >= 0


@cache
def barycentric_grid(n: int, device: str) -> torch.Tensor:
    """(P, 3) barycentric coordinates of an n-subdivision triangle grid."""
    i, j = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    keep = i + j <= n
    i, j = i[keep].float() / n, j[keep].float() / n
    return torch.stack([1 - i - j, i, j], dim=-1).to(device)


def rasterize(vertices: torch.Tensor, triangles: torch.Tensor, size: int) -> Raster:
    """Rasterise (B, V, 3) vertices (x right, y down in pixels; z towards the camera).

    Pixel centres are at integer coordinates 0 .. size-1.
    """
    batch, device = vertices.shape[0], vertices.device
    n_tri = triangles.shape[0]
    assert n_tri < 1 << TRI_BITS
    corners = vertices[:, triangles]  # (B, F, 3, 3)
    xy = corners[..., :2]
    longest = torch.stack(
        [(xy[:, :, a] - xy[:, :, b]).norm(dim=-1) for a, b in ((0, 1), (1, 2), (2, 0))], -1
    ).amax(-1)
    subdivisions = (longest / SPACING).ceil().clamp(1, MAX_SUBDIVISIONS).long()
    # Triangles wholly outside the image are skipped.
    lo, hi = xy.amin(2), xy.amax(2)
    visible = (hi > -0.5).all(-1) & (lo < size - 0.5).all(-1)

    front_key = torch.full((batch * size * size,), -1, dtype=torch.long, device=device)
    back = torch.full((batch * size * size,), float("inf"), device=device)
    z_offset = 1 << 24  # keeps packed keys positive for z down to -2^24 / Z_STEPS
    for n in subdivisions[visible].unique().tolist():
        b_idx, t_idx = torch.nonzero(visible & (subdivisions == n), as_tuple=True)
        points = torch.einsum(
            "pk,tkc->tpc", barycentric_grid(n, str(device)), corners[b_idx, t_idx]
        )
        px = points[..., 0].round().long()
        py = points[..., 1].round().long()
        inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
        pixel = (b_idx[:, None] * size + py) * size + px
        pixel, z = pixel[inside], points[..., 2][inside]
        tri = t_idx[:, None].expand_as(px)[inside]
        key = ((z * Z_STEPS).round().long() + z_offset) << TRI_BITS | tri
        front_key.scatter_reduce_(0, pixel, key, reduce="amax")
        back.scatter_reduce_(0, pixel, z, reduce="amin")

    front_key = front_key.view(batch, size, size)
    covered = front_key >= 0
    triangle = torch.where(covered, front_key & ((1 << TRI_BITS) - 1), -1)
    front = torch.where(
        covered,
        ((front_key >> TRI_BITS) - z_offset).float() / Z_STEPS,
        torch.tensor(float("-inf"), device=device),
    )
    barycentric = pixel_barycentrics(corners, triangle, size)
    return Raster(triangle, front, back.view(batch, size, size), barycentric)


def pixel_barycentrics(corners: torch.Tensor, triangle: torch.Tensor, size: int) -> torch.Tensor:
    """Barycentrics of each pixel centre in its triangle, clamped into the triangle."""
    batch = corners.shape[0]
    b_idx, y, x = torch.nonzero(triangle >= 0, as_tuple=True)
    tri = corners[b_idx, triangle[b_idx, y, x], :, :2]  # (N, 3, 2)
    p = torch.stack([x, y], -1).float()
    v0, v1, v2 = tri[:, 0], tri[:, 1], tri[:, 2]
    e1, e2, ep = v1 - v0, v2 - v0, p - v0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = torch.where(det.abs() < 1e-9, torch.full_like(det, 1e-9), det)
    w1 = (ep[:, 0] * e2[:, 1] - ep[:, 1] * e2[:, 0]) / det
    w2 = (e1[:, 0] * ep[:, 1] - e1[:, 1] * ep[:, 0]) / det
    w = torch.stack([1 - w1 - w2, w1, w2], -1).clamp(0, 1)
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-9)
    out = torch.zeros(batch, size, size, 3, device=corners.device)
    out[b_idx, y, x] = w
    return out
