"""Batched rotations, 2D similarity fits and vertex normals."""

from __future__ import annotations

import torch


def rotation_matrices(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B,) angles in degrees -> (B, 3, 3) `Rz(roll) @ Rx(pitch) @ Ry(yaw)` (DEVELOPERS.md).

    In the camera frame (x right, y up, +z towards the camera): Ry turns +z towards +x,
    Rx turns +z towards +y and Rz turns +x towards +y.
    """
    y, p, r = (torch.deg2rad(a) for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(y), torch.zeros_like(y)

    def stack(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    ry = stack([[y.cos(), zero, y.sin()], [zero, one, zero], [-y.sin(), zero, y.cos()]])
    rx = stack([[one, zero, zero], [zero, p.cos(), p.sin()], [zero, -p.sin(), p.cos()]])
    rz = stack([[r.cos(), -r.sin(), zero], [r.sin(), r.cos(), zero], [zero, zero, one]])
    return rz @ rx @ ry


def fit_similarity_2d(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (B, 2, 3) mapping (B, N, 2) source points onto target."""
    x, y = source[..., 0], source[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    # u = a x - b y + tx ; v = b x + a y + ty
    rows_u = torch.stack([x, -y, one, zero], dim=-1)
    rows_v = torch.stack([y, x, zero, one], dim=-1)
    design = torch.cat([rows_u, rows_v], dim=1)  # (B, 2N, 4)
    rhs = torch.cat([target[..., 0], target[..., 1]], dim=1).unsqueeze(-1)
    a, b, tx, ty = torch.linalg.lstsq(design, rhs).solution.squeeze(-1).unbind(-1)
    return torch.stack([torch.stack([a, -b, tx], dim=-1), torch.stack([b, a, ty], dim=-1)], dim=-2)


def apply_affine_2d(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) affine applied to (B, N, 2) points."""
    return points @ matrix[:, :, :2].transpose(1, 2) + matrix[:, None, :, 2]


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit normals (B, V, 3); sign follows the triangles' winding."""
    corners = vertices[:, triangles]  # (B, F, 3, 3)
    face_normals = torch.linalg.cross(
        corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1
    )
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(1, triangles[:, k], face_normals)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
