"""Head pose: rotation matrices in the DEVELOPERS.md convention, and pose from a mesh alone.

Rotations act on the right-handed *y-up* camera frame (x right, y up, +z towards the camera):
`R = Rz(roll) @ Rx(pitch) @ Ry(yaw)`, and a head's forward direction is `R @ (0, 0, 1)`.
Meshes are stored y-down (image pixels), so a rotation R acts on mesh vertices as
`F @ R @ F` with `F = diag(1, -1, 1)`; `rotate_mesh_vertices` does that.

`estimate_pose` reads the pose off the reconstructed head itself (no landmarks, no model):
the bilateral symmetry plane gives the left-right axis, the nose gives the forward axis.
`pose_from_landmarks` reads it off 68 image landmarks against a mean face's.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from facerecon.face_model import LANDMARKS68_FILE
from facerecon.mesh import FLIP_Y, Mesh


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


POSE_LANDMARKS = slice(17, 68)  # brows, nose, eyes, mouth: not the jaw (see below)


@functools.cache
def reference_landmarks68() -> np.ndarray:
    """(68, 3) the iBUG-68 points of the ICT neutral face, cm (x the subject's left, y up, z
    out of the face): the project's map, `facerecon/data/landmarks68.json`."""
    return np.asarray(json.loads(LANDMARKS68_FILE.read_text())["neutral_cm"], np.float64)


def pose_from_landmarks(points: np.ndarray, reference: np.ndarray | None = None) -> Pose:
    """The pose that turns `reference` (68 model points, default `reference_landmarks68`)
    onto 68 image `points` (pixels, y down) under a scaled orthographic camera: the
    least-squares affine map, its two rows made the nearest orthonormal pair. The jaw is left
    out: where the face turns, annotators put it on the silhouette, a model on the bone."""
    model = (reference_landmarks68() if reference is None else reference)[POSE_LANDMARKS]
    seen = np.asarray(points, np.float64)[POSE_LANDMARKS] * [1.0, -1.0]  # y up
    affine, *_ = np.linalg.lstsq(model - model.mean(0), seen - seen.mean(0), rcond=None)
    u, _, vt = np.linalg.svd(affine.T, full_matrices=False)  # (2, 3) = scale * R[:2]
    rows = u @ vt
    return pose_from_rotation(np.stack([rows[0], rows[1], np.cross(rows[0], rows[1])]))


def rotate_mesh_vertices(
    vertices: np.ndarray, matrix: np.ndarray, centre: np.ndarray
) -> np.ndarray:
    """Rotate y-down mesh vertices about `centre` by a y-up-frame rotation."""
    flip = np.diag(FLIP_Y).astype(np.float64)
    in_mesh_frame = flip @ matrix @ flip
    return ((vertices - centre) @ in_mesh_frame.T + centre).astype(np.float32)


SAMPLES = 2000  # surface points: ~1 degree; the nose tip needs a dense midline
COARSE_SAMPLES = 150  # of those, for choosing among starting planes
FINE_SAMPLES, FINE_STEPS = 1000, 4  # for refining the chosen plane
MIDLINE, LATERAL = 0.15, (0.3, 0.65)  # slabs beside the plane, in RMS radii
CANDIDATE_FACES = 20000  # faces whose areas are weighed when sampling
MAX_AWAY = 0.1  # most negative z of the forward axis (the face was seen: |yaw| < ~95)


def estimate_pose(mesh: Mesh) -> Pose:
    """Coarse head pose from the reconstructed mesh alone.

    1. Bilateral symmetry plane by reflective ICP from several starting planes; its normal
       is the left-right axis.
    2. Forward: the direction in that plane in which the midline (nose) sticks out furthest
       beyond the cheeks on either side; translation-invariant, so it does not depend on
       how much of the skull or neck the volume holds.
       Directions facing away from the camera are excluded: the photo showed the face.
    3. The sign of left-right is chosen so that the head's up axis points up in the image
       (heads in photos are upright to within +-90 degrees of roll).
    """
    if mesh.num_faces == 0:
        raise ValueError("cannot estimate the pose of an empty mesh")
    points, normals = _surface_samples(mesh, SAMPLES)
    points -= points.mean(axis=0)
    points /= np.sqrt((points**2).sum(axis=1).mean())
    left = _symmetry_normal(points, normals)
    forward = _forward_axis(points, left)
    up = np.cross(forward, left)
    if up[1] < 0:  # `left` pointed to the subject's right: flip to make (left, up, forward)
        left, up = -left, -up
    return pose_from_rotation(np.stack([left, up, forward], axis=1))


def _surface_samples(mesh: Mesh, count: int) -> tuple[np.ndarray, np.ndarray]:
    """About area-uniform points (triangle centroids) and their unit face normals, y-up
    frame, drawn with a fixed seed: faces are drawn by area from a uniform subset."""
    rng = np.random.default_rng(0)
    faces = mesh.faces
    if len(faces) > CANDIDATE_FACES:
        faces = faces[rng.choice(len(faces), CANDIDATE_FACES, replace=False)]
    v = mesh.vertices.astype(np.float64) * FLIP_Y
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    cross = np.cross(b - a, c - a)
    cumulative = np.cumsum(np.sqrt(np.einsum("ij,ij->i", cross, cross)))
    if not cumulative[-1] > 0:
        raise ValueError("cannot estimate the pose of a mesh without area")
    draws = rng.random(count) * cumulative[-1]
    chosen = np.minimum(np.searchsorted(cumulative, draws), len(cumulative) - 1)
    normals = cross[chosen] / np.linalg.norm(cross[chosen], axis=1, keepdims=True)
    return (a[chosen] + b[chosen] + c[chosen]) / 3.0, normals


def _symmetry_normal(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Unit normal of the best mirror plane of a centred, unit-size point cloud.

    A few point-to-plane steps from each of several starts (the principal axes and the
    camera's x axis turned by a few yaws: a face's left-right axis is near one of them) on a
    few hundred points pick the start; steps on `FINE_SAMPLES` points refine it. Partners
    are always looked up among all the points.
    """
    tree = cKDTree(points)
    _, axes = np.linalg.eigh(np.einsum("ij,ik->jk", points, points))
    starts = [axes[:, i] for i in range(3)]
    starts += [rotation_matrix(yaw, 0.0)[:, 0] for yaw in (-60.0, -20.0, 20.0, 60.0)]
    few = slice(None, None, max(1, len(points) // COARSE_SAMPLES))
    fits = [_reflective_icp(points[few], tree, points, normals, start, 0.0, 4) for start in starts]
    _, normal, offset = min(fits, key=lambda fit: fit[0])
    fine = slice(None, None, max(1, len(points) // FINE_SAMPLES))
    return _reflective_icp(points[fine], tree, points, normals, normal, offset, FINE_STEPS)[1]


def _reflective_icp(
    query: np.ndarray,
    tree: cKDTree,
    points: np.ndarray,
    normals: np.ndarray,
    normal: np.ndarray,
    offset: float,
    iterations: int,
) -> tuple[float, np.ndarray, float]:
    """Fit the plane `x . normal = offset` so that mirrored `query` points land on the
    surface through `points` (with `normals`): Gauss-Newton on point-to-plane distances, the
    worst 20 % of matches ignored. Returns (mean kept distance, normal, offset)."""
    for iteration in range(iterations + 1):
        side = query @ normal - offset
        mirrored = query - 2.0 * side[:, None] * normal
        _, partner = tree.query(mirrored)
        nu = normals[partner]
        residual = np.einsum("ij,ij->i", mirrored - points[partner], nu)
        keep = np.abs(residual) <= np.quantile(np.abs(residual), 0.8)
        error = float(np.abs(residual[keep]).mean())
        if iteration == iterations:
            break
        # derivatives of the mirrored point along nu, for normal += a*e1 + b*e2, offset += c
        e1, e2 = _perpendiculars(normal)
        nu_n = nu @ normal
        jacobian = np.stack(
            [
                -2.0 * ((query @ e1) * nu_n + side * (nu @ e1)),
                -2.0 * ((query @ e2) * nu_n + side * (nu @ e2)),
                2.0 * nu_n,
            ],
            axis=1,
        )[keep]
        gram = np.einsum("ij,ik->jk", jacobian, jacobian)  # normal equations, 3 x 3
        step = np.linalg.solve(gram + 1e-9 * np.eye(3), -residual[keep] @ jacobian)
        normal = normal + step[0] * e1 + step[1] * e2
        normal /= np.linalg.norm(normal)
        offset += step[2]
    return error, normal, offset


def _forward_axis(points: np.ndarray, left: np.ndarray, steps: int = 180) -> np.ndarray:
    """The direction, perpendicular to `left`, in which points near the symmetry plane (the
    nose) reach furthest beyond points a cheek's width to either side."""
    side = points @ left
    side -= np.median(side)
    midline = points[np.abs(side) < MIDLINE]
    lateral = points[(np.abs(side) > LATERAL[0]) & (np.abs(side) < LATERAL[1])]
    u, w = _perpendiculars(left)
    theta = np.linspace(0.0, 2.0 * np.pi, steps, endpoint=False)
    cos, sin = np.cos(theta), np.sin(theta)

    def reach(p: np.ndarray) -> np.ndarray:  # furthest extent along each direction
        # outer products, not a matrix product: tiny BLAS calls stall on a busy machine
        if len(p) == 0:
            return np.zeros_like(cos)
        return (np.multiply.outer(p @ u, cos) + np.multiply.outer(p @ w, sin)).max(axis=0)

    facing = cos * u[2] + sin * w[2]  # towards the camera
    # the tiny camera-facing term only breaks ties (e.g. a shape with no nose)
    protrusion = reach(midline) - reach(lateral) + 1e-6 * facing
    # the face was seen in the photo, so it cannot face away from the camera
    protrusion[facing < -MAX_AWAY] = -np.inf
    best = np.argmax(protrusion)
    return cos[best] * u + sin[best] * w


def _perpendiculars(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing the unit `axis` to an orthonormal basis."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = helper - (helper @ axis) * axis
    first /= np.linalg.norm(first)
    x, y, z = axis
    a, b, c = first
    return first, np.array([y * c - z * b, z * a - x * c, x * b - y * a])
