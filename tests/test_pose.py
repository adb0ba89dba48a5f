"""Pose conventions, and pose estimation on real head geometry (the ICT face model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facerecon.mesh import Mesh, volume_to_mesh
from facerecon.pose import (
    Pose,
    estimate_pose,
    pose_from_rotation,
    rotate_mesh_vertices,
    rotation_matrix,
)

FACEMODEL = Path(__file__).resolve().parents[1].parent / "shared" / "facemodel"
OUTER_HEAD = ("face", "head_and_neck", "eyeball_left", "eyeball_right")


def test_rotation_matrix_follows_the_documented_convention():
    forward = np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(rotation_matrix(90, 0, 0) @ forward, [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(rotation_matrix(0, 90, 0) @ forward, [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rotation_matrix(0, 0, 90) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    r = rotation_matrix(30, -20, 10)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(
        r, rotation_matrix(0, 0, 10) @ rotation_matrix(0, -20, 0) @ rotation_matrix(30, 0, 0)
    )


def test_pose_from_rotation_inverts_rotation_matrix():
    rng = np.random.default_rng(0)
    for yaw, pitch, roll in zip(
        rng.uniform(-179, 179, 200),
        rng.uniform(-89, 89, 200),
        rng.uniform(-179, 179, 200),
        strict=True,
    ):
        pose = pose_from_rotation(rotation_matrix(yaw, pitch, roll))
        np.testing.assert_allclose([pose.yaw, pose.pitch, pose.roll], [yaw, pitch, roll], atol=1e-6)
    np.testing.assert_allclose(Pose(10, 20, 30).matrix(), rotation_matrix(10, 20, 30))


def test_gimbal_lock_keeps_the_rotation():
    r = rotation_matrix(40, 90, 25)
    pose = pose_from_rotation(r)
    np.testing.assert_allclose(pose.matrix(), r, atol=1e-9)


def test_rotating_mesh_vertices_respects_y_down():
    centre = np.array([100.0, 100.0, 0.0], np.float32)
    nose = np.array([[100.0, 100.0, 10.0]], np.float32)  # in front of the centre
    turned = rotate_mesh_vertices(nose, rotation_matrix(90, 0, 0), centre)
    np.testing.assert_allclose(turned, [[110, 100, 0]], atol=1e-5)  # to the image's right
    raised = rotate_mesh_vertices(nose, rotation_matrix(0, 90, 0), centre)
    np.testing.assert_allclose(raised, [[100, 90, 0]], atol=1e-5)  # up: smaller image y


def test_degenerate_shapes_give_a_finite_pose_or_a_clear_error():
    ball = Mesh(*_icosphere())
    pose = estimate_pose(ball)  # a sphere has no preferred pose, but the answer is finite
    assert np.isfinite([pose.yaw, pose.pitch, pose.roll]).all()
    with pytest.raises(ValueError):
        estimate_pose(Mesh(np.zeros((3, 3)), [[0, 1, 2]]))
    with pytest.raises(ValueError):
        estimate_pose(Mesh(np.zeros((0, 3)), np.zeros((0, 3))))


def _icosphere() -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    ico = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    return ico.vertices * [1.0, -1.0, 1.0], ico.faces


def ict_heads(identities: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outer head surfaces (vertices in cm, y up, face towards +z; triangles) of the neutral
    head and a few random identities."""
    if not FACEMODEL.is_dir():
        pytest.skip("../shared/facemodel is not available")
    model = np.load(FACEMODEL / "ict_face_light.npz")
    ranges = json.loads((FACEMODEL / "regions.json").read_text())["vertex_ranges_half_open"]
    keep = np.zeros(len(model["neutral"]), bool)
    for part in OUTER_HEAD:
        keep[slice(*ranges[part])] = True
    triangles = model["triangles"][keep[model["triangles"]].all(axis=1)]
    new_index = np.cumsum(keep) - 1
    rng = np.random.default_rng(7)
    heads = []
    for i in range(identities):
        shape = model["neutral"].astype(np.float64)
        if i:
            shape = shape + np.tensordot(rng.normal(size=100), model["identity_basis"], axes=1)
        heads.append((shape[keep], new_index[triangles]))
    return heads


def random_poses(count: int, seed: int) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(seed)
    poses = [(0.0, 0.0, 0.0), (80.0, 0.0, 0.0), (-80.0, 10.0, 0.0)]
    poses += [
        (rng.uniform(-80, 80), rng.uniform(-30, 30), rng.uniform(-20, 20))
        for _ in range(count - len(poses))
    ]
    return poses


def pose_errors(estimates: list[Pose], truths: list[tuple[float, float, float]]) -> np.ndarray:
    return np.abs(
        [
            [e.yaw - y, e.pitch - p, e.roll - r]
            for e, (y, p, r) in zip(estimates, truths, strict=True)
        ]
    )


def to_mesh_frame(vertices_cm: np.ndarray, pose, pixels_per_cm: float) -> np.ndarray:
    """Posed head in image-like pixels: y down, +z towards the camera."""
    posed = vertices_cm @ rotation_matrix(*pose).T * pixels_per_cm
    return posed * [1.0, -1.0, 1.0]


def test_estimate_pose_on_ict_meshes():
    heads = ict_heads(identities=4)
    truths, estimates = [], []
    for i, (vertices, triangles) in enumerate(heads):
        for pose in random_poses(8, seed=i):
            mesh = Mesh(to_mesh_frame(vertices, pose, 6.0) + [300, 200, 0], triangles)
            estimates.append(estimate_pose(mesh))
            truths.append(pose)
    errors = pose_errors(estimates, truths)
    assert np.median(errors, axis=0).max() < 5.0
    assert errors.max() < 15.0


def voxelise(vertices: np.ndarray, triangles: np.ndarray, shape=(200, 192, 192)) -> np.ndarray:
    """Occupancy [d, y, x] between the nearest and farthest surface along each pixel's ray,
    from dense surface samples; vertices in crop space (x, y pixels, z = d - D/2)."""
    rng = np.random.default_rng(0)
    corners = vertices[triangles]
    area = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    chosen = rng.choice(len(triangles), size=1_500_000, p=area / area.sum())
    u, v = rng.random((2, len(chosen)))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    c = corners[chosen]
    points = c[:, 0] + u[:, None] * (c[:, 1] - c[:, 0]) + v[:, None] * (c[:, 2] - c[:, 0])
    depth, height, width = shape
    col, row = np.rint(points[:, 0]).astype(int), np.rint(points[:, 1]).astype(int)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    pixel = row[inside] * width + col[inside]
    d = points[inside, 2] + depth / 2
    near = np.full(height * width, -np.inf)
    far = np.full(height * width, np.inf)
    np.maximum.at(near, pixel, d)
    np.minimum.at(far, pixel, d)
    slices = np.arange(depth)[:, None]
    return ((slices >= far) & (slices <= near)).reshape(depth, height, width).astype(np.float32)


def test_estimate_pose_through_a_cropped_volume():
    """As in the service: a volume cut by the crop's borders (top of the head, neck), meshed."""
    (vertices, triangles), identity = ict_heads(identities=2)
    truths, estimates = [], []
    for i, pose in enumerate(random_poses(6, seed=11)):
        head = (vertices, triangles) if i % 2 == 0 else identity
        posed = to_mesh_frame(head[0], pose, 6.5) + [96.0, 88.0, 0.0]  # the crop cuts the neck
        volume = voxelise(posed, head[1])
        assert volume[:, -1].any()  # the neck runs out of the crop
        estimates.append(estimate_pose(volume_to_mesh(volume)))
        truths.append(pose)
    errors = pose_errors(estimates, truths)
    assert np.median(errors, axis=0).max() < 10.0
    assert errors.max() < 20.0


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (35, 10, -5), (-75, -8, 12), (88, 0, 0)])
def test_pose_from_landmarks_recovers_a_posed_reference(yaw, pitch, roll):
    from facerecon.pose import pose_from_landmarks, reference_landmarks68

    model = reference_landmarks68()
    camera = model @ rotation_matrix(yaw, pitch, roll).T
    points = np.stack([camera[:, 0] * 6 + 300, -camera[:, 1] * 6 + 200], 1)  # pixels, y down
    points[:17] += 25.0  # the jaw is not used: an annotator's silhouette may be anywhere
    pose = pose_from_landmarks(points)
    assert np.allclose([pose.yaw, pose.pitch, pose.roll], [yaw, pitch, roll], atol=1e-6)
