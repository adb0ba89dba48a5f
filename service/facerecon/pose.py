"""Head pose: rotation matrices in the DEVELOPERS.md convention, and pose from a mesh alone.

Rotations act on the right-handed *y-up* camera frame (x right, y up, +z towards the camera):
`R = Rz(roll) @ Rx(pitch) @ Ry(yaw)`, and a head's forward direction is `R @ (0, 0, 1)`.
Meshes are stored y-down (image pixels), so a rotation R acts on mesh vertices as
`F @ R @ F` with `F = diag(1, -1, 1)`; `rotate_mesh_vertices` does that.

`estimate_pose` reads the pose off the reconstructed head itself (no landmarks, no model):
the bilateral symmetry plane gives the left-right axis, the nose gives the forward axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from facerecon.mesh import Mesh

FLIP_Y = np.diag([1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Pose:
    """Degrees. yaw > 0: the face turns to the image's right; pitch > 0: looks up;
    roll > 0: counter-clockwise as the camera sees it."""

    yaw: float
    pitch: float
    roll: float

    def matrix(self) -> np.ndarray:
        return rotation_matrix(self.yaw, self.pitch, self.roll)


def rotation_matrix(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """`Rz(roll) @ Rx(pitch) @ Ry(yaw)` (degrees) in the y-up camera frame, float64 (3, 3)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = (
        math.cos(y),
        math.sin(y),
        math.cos(p),
        math.sin(p),
        math.cos(r),
        math.sin(r),
    )
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])  # +z towards +x
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])  # +z towards +y
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])  # +x towards +y
    return rz @ rx @ ry


def pose_from_rotation(matrix: np.ndarray) -> Pose:
    """The inverse of `rotation_matrix` (pitch in [-90, 90]; at +-90 roll is taken as 0)."""
    m = np.asarray(matrix, dtype=np.float64)
    # the bottom row is (-cos p sin y, -sin p, cos p cos y): roll does not touch it
    pitch = math.asin(max(-1.0, min(1.0, -m[2, 1])))
    if math.cos(pitch) > 1e-6:
        yaw = math.atan2(-m[2, 0], m[2, 2])
        roll = math.atan2(-m[0, 1], m[1, 1])  # (-sin r cos p, cos r cos p)
    else:  # gimbal lock: only yaw - roll (or yaw + roll) is defined; put it all in yaw
        yaw = math.atan2(m[0, 2], m[0, 0])
        roll = 0.0
    return Pose(math.degrees(yaw), math.degrees(pitch), math.degrees(roll))


def rotate_mesh_vertices(
    vertices: np.ndarray, matrix: np.ndarray, centre: np.ndarray
) -> np.ndarray:
    """Rotate y-down mesh vertices about `centre` by a y-up-frame rotation."""
    in_mesh_frame = FLIP_Y @ matrix @ FLIP_Y
    return ((vertices - centre) @ in_mesh_frame.T + centre).astype(np.float32)


SAMPLES = 2000  # surface points: ~1 degree; the nose tip needs a dense midline
COARSE_SAMPLES = 250  # of those, for choosing among starting planes


def estimate_pose(mesh: Mesh) -> Pose:
    """Coarse head pose from the reconstructed mesh alone.

    1. Bilateral symmetry plane by reflective ICP from several starting normals; its normal
       is the left-right axis.
    2. Forward: the direction in that plane in which the midline (nose) sticks out furthest
       beyond the cheeks on either side; translation-invariant, so it does not depend on
       how much of the skull or neck the volume holds.
    3. The sign of left-right is chosen so that the head's up axis points up in the image
       (heads in photos are upright to within +-90 degrees of roll).
    """
    if mesh.num_faces == 0:
        raise ValueError("cannot estimate the pose of an empty mesh")
    points = _surface_samples(mesh, SAMPLES)
    centre = points.mean(axis=0)
    points = points - centre
    size = float(np.sqrt((points**2).sum(axis=1).mean()))
    points /= size
    normal = _symmetry_normal(points)
    forward = _forward_axis(points, normal)
    up = np.cross(forward, normal)
    if up[1] < 0:  # normal pointed to the subject's right: flip to make (left, up, forward)
        normal, up = -normal, -up
    return pose_from_rotation(np.stack([normal, up, forward], axis=1))


def _surface_samples(mesh: Mesh, count: int) -> np.ndarray:
    """Area-uniform points (triangle centroids, y-up frame) drawn with a fixed seed."""
    v = mesh.vertices.astype(np.float64) * (1.0, -1.0, 1.0)
    corners = v[mesh.faces]
    area = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(area), size=count, p=area / area.sum())
    return corners[chosen].mean(axis=1)


def _symmetry_normal(points: np.ndarray) -> np.ndarray:
    """Unit normal of the best mirror plane (through the origin's neighbourhood).

    Coarse reflective ICP on a few hundred points from the principal axes and from the
    camera's x axis turned by a few yaws (a face's left-right axis is near one of them), then
    the best start is refined on all points.
    """
    tree = cKDTree(points)  # mirrored query points are matched against all the points
    _, axes = np.linalg.eigh(points.T @ points)
    starts = [axes[:, i] for i in range(3)]
    starts += [rotation_matrix(yaw, 0.0)[:, 0] for yaw in (-60.0, -20.0, 20.0, 60.0)]
    coarse = points[:: max(1, len(points) // COARSE_SAMPLES)]
    fits = [_reflective_icp(coarse, tree, points, normal, 0.0, 4) for normal in starts]
    _, normal, offset = min(fits, key=lambda fit: fit[0])
    return _reflective_icp(points, tree, points, normal, offset, 6)[1]


def _reflective_icp(
    query: np.ndarray,
    tree: cKDTree,
    points: np.ndarray,
    normal: np.ndarray,
    offset: float,
    iterations: int,
) -> tuple[float, np.ndarray, float]:
    """Refine the plane `x . normal = offset` so that mirrored `query` points land on
    `points`; returns (mean distance of the best 80 %, normal, offset)."""
    for _ in range(iterations):
        mirrored = query - 2.0 * (query @ normal - offset)[:, None] * normal
        dist, partner = tree.query(mirrored)
        keep = dist <= np.quantile(dist, 0.8)
        diff = (query - points[partner])[keep]  # each is parallel to the true normal
        _, vecs = np.linalg.eigh(diff.T @ diff)
        normal = vecs[:, 2] * np.sign(vecs[:, 2] @ normal)
        offset = float(((query + points[partner])[keep] / 2.0 @ normal).mean())
    return float(dist[keep].mean()), normal, offset


def _forward_axis(points: np.ndarray, normal: np.ndarray, steps: int = 180) -> np.ndarray:
    side = points @ normal
    side -= np.median(side)
    midline = points[np.abs(side) < 0.1]
    lateral = points[(np.abs(side) > 0.25) & (np.abs(side) < 0.6)]
    u = np.cross(normal, [0.0, 1.0, 0.0] if abs(normal[1]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    w = np.cross(normal, u)
    theta = np.linspace(0.0, 2.0 * np.pi, steps, endpoint=False)
    dirs = np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * w  # (steps, 3)
    protrusion = (midline @ dirs.T).max(axis=0) - (lateral @ dirs.T).max(axis=0)
    best = theta[np.argmax(protrusion)]
    return np.cos(best) * u + np.sin(best) * w
