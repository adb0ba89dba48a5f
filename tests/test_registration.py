"""Registering the ICT face model to reconstructed surfaces; the Reconstructor's option."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.sparse.csgraph import connected_components

from facerecon.errors import FeatureUnavailable
from facerecon.face_model import load_face_model
from facerecon.mesh import Mesh, volume_to_mesh
from facerecon.pose import Pose, rotation_matrix
from facerecon.reconstructor import ReconstructOptions, Reconstructor
from facerecon.registration import (
    _FIVE_FROM_68,
    FACE_TOPOLOGY,
    HEAD_TOPOLOGY,
    _rodrigues,
    _rotation_vector,
    _Target,
    face_region,
    register,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ICT = SHARED / "facemodel" / "ict_face_light.npz"
needs_model = pytest.mark.skipif(not ICT.is_file(), reason="needs ../shared/facemodel")


@pytest.fixture(scope="module")
def face_model():
    if not ICT.is_file():
        pytest.skip("needs ../shared/facemodel")
    return load_face_model(ICT)


@cache
def solid_head():
    """The data engine's head model: the outer head closed by the eyeballs and mouth socket."""
    from training.engine.facemodel import load_face_model as load_solid_head

    return load_solid_head(SHARED / "facemodel")


def solid_head_volume(pose, identity_seed=3, scale=10.0):
    """The data engine's target volume of a random ICT identity (the solid between the head's
    nearest and farthest surfaces), as a mesh: what a perfect network would give. Returns
    (mesh, 68 landmarks), both in crop pixels."""
    from training.engine.raster import rasterize
    from training.engine.voxelize import fill_volume

    solid = solid_head()
    g = torch.Generator().manual_seed(identity_seed)
    identity = torch.zeros(1, solid.identity_basis.shape[0])
    identity[:, :40] = torch.randn(1, 40, generator=g)
    shape = solid.shapes(identity, torch.zeros(1, solid.expression_basis.shape[0]))[0]
    rotation = torch.from_numpy(rotation_matrix(*pose)).float()
    vertices = scale * shape @ rotation.T * torch.tensor([1.0, -1.0, 1.0])
    vertices = vertices + torch.tensor([95.5, 95.5, 0.0]) - vertices[solid.landmarks68].mean(0)
    vertices[:, 2] -= vertices[:, 2].max() - 90.0  # the nearest point stays in the volume
    raster = rasterize(vertices[None], solid.triangles, 192)
    front = torch.where(raster.mask, raster.front, float("-inf"))
    back = torch.where(raster.mask, raster.back, float("inf"))
    volume = fill_volume(front, back)[0].float().numpy()
    return volume_to_mesh(volume), vertices[solid.landmarks68].numpy()


def nme(predicted: np.ndarray, truth: np.ndarray) -> float:
    interocular = np.linalg.norm(truth[36] - truth[45])
    return float(np.linalg.norm(predicted - truth, axis=1).mean() / interocular)


@needs_model
@pytest.mark.parametrize("pose", [(0.0, 0.0, 0.0), (35.0, 10.0, -5.0), (-70.0, -15.0, 10.0)])
def test_registration_of_a_perfect_volume_recovers_pose_and_landmarks(face_model, pose):
    mesh, landmarks = solid_head_volume(pose)
    threads = torch.get_num_threads()
    # no pose estimate given: the fit must find the head's orientation by itself
    result = register(mesh, face_model, None)
    assert torch.get_num_threads() == threads  # the fit's single-thread setting is undone
    fitted = np.array([result.pose.yaw, result.pose.pitch, result.pose.roll])
    assert np.abs(fitted - pose).max() < 3.0
    assert nme(result.landmarks68_3d, landmarks) < 0.07
    np.testing.assert_allclose(result.landmarks68_2d, result.landmarks68_3d[:, :2])
    assert result.vertices.shape == (face_model.num_vertices, 3)
    assert result.triangles.shape == tuple(face_model.triangles.shape)
    assert 0.0 <= result.expression.min() and result.expression.max() <= 1.0
    assert result.fit_error < 3.0  # pixels, at ~10 pixels per cm


@needs_model
def test_a_rough_pose_estimate_is_corrected(face_model):
    """Seeded by an estimate 20° off in yaw (the learned estimator's worst cases), the local
    fan of starts and the weak pull towards the estimate still find the true pose."""
    pose = (-55.0, 10.0, 0.0)
    mesh, landmarks = solid_head_volume(pose)
    result = register(mesh, face_model, Pose(-35.0, 5.0, 5.0))
    fitted = np.array([result.pose.yaw, result.pose.pitch, result.pose.roll])
    assert np.abs(fitted - pose).max() < 4.0
    assert nme(result.landmarks68_3d, landmarks) < 0.07


@needs_model
def test_photo_landmarks_pull_the_fit(face_model):
    """2D landmarks from the photo move the fitted landmarks towards them; the true ones keep
    a good fit good; malformed ones are refused."""
    pose = (20.0, 0.0, 0.0)
    mesh, landmarks = solid_head_volume(pose)
    five = _FIVE_FROM_68 @ landmarks[:, :2]
    alone = register(mesh, face_model, Pose(*pose))
    guided = register(mesh, face_model, Pose(*pose), landmarks=five)
    assert nme(guided.landmarks68_3d, landmarks) < max(
        0.05, 1.2 * nme(alone.landmarks68_3d, landmarks)
    )
    shifted = register(mesh, face_model, Pose(*pose), landmarks=five + [0.0, 8.0])
    moved = (shifted.landmarks68_2d - alone.landmarks68_2d)[:, 1].mean()
    assert 1.0 < moved < 8.0  # towards them, but the surface holds on too
    with pytest.raises(ValueError, match="5 or 68"):
        register(mesh, face_model, Pose(*pose), landmarks=five[:4])


def test_rotation_vector_inverts_rodrigues():
    omega = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [0.0, 2.5, 0.0], [1e-4, 0, 0]])
    recovered = _rotation_vector(_rodrigues(omega))
    torch.testing.assert_close(recovered, omega, atol=1e-4, rtol=1e-3)


def test_grid_lookup_finds_the_visible_surface():
    """Points near the camera-facing surface of a sphere are matched to a vertex of that
    surface about as near as the true nearest one (within a grid cell); points far from any
    cell within reach get no match; the back of the sphere is never matched."""
    from skimage.measure import marching_cubes

    z, y, x = np.mgrid[:64, :64, :64]
    inside = ((x - 32) ** 2 + (y - 32) ** 2 + (z - 32) ** 2 < 20**2).astype(np.float32)
    vertices, faces, normals, _ = marching_cubes(inside, 0.5)
    mesh = Mesh(vertices[:, ::-1], faces[:, ::-1], normals=normals[:, ::-1])  # (x, y, z)
    target = _Target(mesh)
    points = target.points.numpy()
    front = points[points[:, 2] > 5.0]
    rng = np.random.default_rng(0)
    query = front[rng.choice(len(front), 300)] + rng.normal(0.0, 1.0, (300, 3))
    found, found_normals = target.nearest(torch.from_numpy(query.astype(np.float32)), reach=2)
    found = found.numpy()
    exact = np.linalg.norm(query[:, None] - points[None], axis=-1).min(1)
    assert (np.linalg.norm(found - query, axis=1) <= exact + 1.5 * target.cell).all()
    assert (found[:, 2] > -2.0).all()  # the front half of the sphere, never its back
    assert (found_normals[:, 2] >= 0).all()  # zero: on the cut at the box's sides
    far = torch.tensor([[0.0, 0.0, 30.0]])  # the sphere's centre line, well in front
    points_far, normals_far = target.nearest(far, bound=3.0)
    assert torch.equal(points_far, far) and not normals_far.any()


@needs_model
def test_registration_is_in_the_mesh_frame(face_model):
    """A mesh scaled and shifted (as into a photo's pixels) gives the same fit, scaled and
    shifted."""
    mesh, _ = solid_head_volume((20.0, 0.0, 0.0))
    pose = Pose(20.0, 0.0, 0.0)
    near = register(mesh, face_model, pose)
    far = register(mesh.transformed(2.0, np.array([300.0, 50.0, 7.0])), face_model, pose)
    expected = near.landmarks68_3d * 2.0 + [300.0, 50.0, 7.0]
    assert np.abs(far.landmarks68_3d - expected).mean() < 2.0
    assert abs(far.scale - 2.0 * near.scale) < 0.05 * far.scale


@needs_model
def test_empty_mesh_is_refused(face_model):
    with pytest.raises(ValueError):
        register(Mesh(np.zeros((0, 3)), np.zeros((0, 3))), face_model)


def test_missing_face_model_is_none_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERECON_FACE_MODEL", str(tmp_path / "absent.npz"))
    assert load_face_model() is None
    assert load_face_model(tmp_path / "also-absent.npz") is None


def test_reconstructor_refuses_registration_only_without_the_model(
    tiny_weights, astronaut, tmp_path, monkeypatch
):
    monkeypatch.setenv("FACERECON_FACE_MODEL", str(tmp_path / "absent.npz"))
    reconstructor = Reconstructor(tiny_weights, device="cpu")
    plain = reconstructor(astronaut, options=ReconstructOptions(frontal=False))
    assert plain.registration is None and plain.texture is None
    with pytest.raises(FeatureUnavailable, match="import-face-model"):
        reconstructor(astronaut, options=ReconstructOptions(registration=True))
    face = reconstructor.prepare(astronaut)
    (volume,) = reconstructor.predict([face])
    with pytest.raises(FeatureUnavailable, match="FACERECON_FACE_MODEL"):
        reconstructor.finish(face, volume, ReconstructOptions(registration=True))


@needs_model
def test_reconstructor_registers_and_textures(tiny_weights, astronaut):
    reconstructor = Reconstructor(tiny_weights, device="cpu", face_model=ICT)
    options = ReconstructOptions(frontal=False, registration=True)
    result = reconstructor(astronaut, options=options)
    assert result.registration is not None
    assert result.registration.vertices.shape == (reconstructor.face_model.num_vertices, 3)
    assert result.texture.shape == (512, 1024, 3) and result.texture.dtype == np.uint8
    assert {"registration", "texture"} <= set(result.timings_ms)
    assert result.pose == result.registration.pose  # the fit's pose is the answer


@needs_model
def test_face_region_is_the_facial_mask_with_closed_eyes_and_mouth(face_model):
    """The face-only topology keeps the mask's vertices in order (the 68 landmarks too), the
    triangles among them and only the texture coordinates those use; its one open boundary is
    the mask's rim (the eyes and mouth stay closed)."""
    mesh, _ = solid_head_volume((20.0, 0.0, 0.0))
    head = register(mesh, face_model, Pose(20.0, 0.0, 0.0))
    face = face_region(head, face_model)
    kept = face_model.face_region.numpy()
    assert face.topology == FACE_TOPOLOGY and head.topology == HEAD_TOPOLOGY
    assert len(face.vertices) == len(kept) == 6706 + 3
    np.testing.assert_array_equal(face.vertices, head.vertices[kept])
    np.testing.assert_array_equal(face.landmarks68_3d, head.landmarks68_3d)
    np.testing.assert_array_equal(face.vertices[face_model.landmarks68], head.landmarks68_3d)
    assert 0 < len(face.triangles) < len(head.triangles)
    assert np.array_equal(np.unique(face.triangles), np.arange(len(face.vertices)))
    assert np.array_equal(np.unique(face.triangle_uvs), np.arange(len(face.uv)))
    np.testing.assert_array_equal(  # each corner keeps its texture coordinate
        face.uv[face.triangle_uvs], head.uv[head.triangle_uvs][np.isin(head.triangles, kept).all(1)]
    )
    edges = np.sort(face.triangles[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2), axis=1)
    pairs, counts = np.unique(edges, axis=0, return_counts=True)
    rim = pairs[counts == 1]
    assert len(rim) > 100  # an open mask ...
    _, components = connected_components(
        scipy.sparse.coo_matrix((np.ones(len(rim)), (rim[:, 0], rim[:, 1])),
                                shape=(len(face.vertices),) * 2),
        directed=False,
    )  # fmt: skip
    assert len(np.unique(components[np.unique(rim)])) == 1  # ... with a single rim
    with pytest.raises(ValueError, match=HEAD_TOPOLOGY):
        face_region(face, face_model)
