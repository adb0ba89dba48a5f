"""volume_to_mesh and mesh helpers against shapes with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from facerecon.mesh import (
    Mesh,
    decimate,
    height_map_mesh,
    largest_component,
    sample_colors,
    surface_mesh,
    taubin_smooth,
    to_image_space,
    volume_to_mesh,
)
from facerecon.models.volume_pose import pool_volume
from facerecon.volume import CoarseVolume

SHAPE = (200, 192, 192)  # [d, y, x]


def ball_volume(centre_dyx, radii_dyx, shape=SHAPE, sharpness=4.0) -> np.ndarray:
    """Soft occupancy of an ellipsoid (a sigmoid across ~1 voxel, like a network's output)."""
    d, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    axes = zip((d, y, x), centre_dyx, radii_dyx, strict=True)
    r = np.sqrt(sum(((g - c) / s) ** 2 for g, c, s in axes))
    signed = (1.0 - r) * min(radii_dyx)  # ~ voxels inside the surface
    return (1.0 / (1.0 + np.exp(np.clip(-sharpness * signed, -50, 50)))).astype(np.float32)


def as_trimesh(mesh: Mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices * [1, -1, 1], mesh.faces, process=False)


@pytest.fixture(scope="module")
def sphere_volume() -> np.ndarray:
    return ball_volume((110, 90, 100), (40, 40, 40))


@pytest.mark.parametrize("step", [1, 2])
def test_sphere_is_closed_with_the_right_size(sphere_volume, step):
    mesh = volume_to_mesh(sphere_volume, step=step)
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
    assert as_trimesh(mesh).is_watertight
    centre = np.array([100, 90, 110 - 100])  # crop space: x, y, z = d - 100
    radius = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert abs(radius.mean() - 40) < 1.0
    assert radius.std() < 0.5
    # wound counter-clockwise seen from outside in the y-up frame: positive volume
    assert mesh.signed_volume() == pytest.approx(4 / 3 * np.pi * 40**3, rel=0.04)
    outward = (mesh.vertices - centre) / radius[:, None]
    assert np.einsum("ij,ij->i", outward, mesh.normals).min() > 0.9


def test_accepts_torch_tensors(sphere_volume):
    from_numpy = volume_to_mesh(sphere_volume)
    from_torch = volume_to_mesh(torch.from_numpy(sphere_volume))
    np.testing.assert_array_equal(from_numpy.vertices, from_torch.vertices)


def test_largest_component_is_kept():
    volume = np.maximum(
        ball_volume((100, 60, 60), (30, 30, 30)), ball_volume((100, 150, 150), (8, 8, 8))
    )
    mesh = volume_to_mesh(volume)
    assert as_trimesh(mesh).is_watertight
    assert np.allclose(mesh.vertices.mean(axis=0), [60, 60, 0], atol=0.5)
    # the helper on its own: two disjoint tetrahedra, the bigger one (more vertices) wins
    tetra = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    vertices = np.vstack([np.eye(3), np.zeros((1, 3))])
    two = Mesh(
        np.vstack([vertices, vertices + 5, [[9, 9, 9]]]),
        np.vstack([tetra, tetra + 4, [[8, 4, 5]]]),
    )
    kept = largest_component(two)
    assert kept.num_vertices == 5 and kept.num_faces == 5


def test_smoothing_does_not_shrink(sphere_volume):
    raw = volume_to_mesh(sphere_volume, smooth_iterations=0)
    smoothed = taubin_smooth(raw, 10)
    centre = np.array([100, 90, 10])
    raw_radius = np.linalg.norm(raw.vertices - centre, axis=1)
    smooth_radius = np.linalg.norm(smoothed.vertices - centre, axis=1)
    assert abs(smooth_radius.mean() - raw_radius.mean()) < 0.3
    assert smooth_radius.std() < raw_radius.std()  # it does remove the voxel ripples


def test_surface_is_closed_where_the_head_meets_the_crop_border():
    volume = ball_volume((100, 0, 96), (50, 60, 50))  # cut in half by the top border
    mesh = volume_to_mesh(volume)
    assert as_trimesh(mesh).is_watertight
    assert mesh.signed_volume() > 0
    assert mesh.vertices[:, 1].min() < 0.5  # reaches the border row


def test_empty_volume_gives_an_empty_mesh():
    mesh = volume_to_mesh(np.zeros((20, 16, 16), np.float32))
    assert mesh.num_vertices == 0 and mesh.num_faces == 0


def test_rejects_non_volumes():
    with pytest.raises(ValueError):
        volume_to_mesh(np.zeros((16, 16), np.float32))


def test_to_image_space_inverts_the_crop_similarity():
    image_points = np.array([[10.0, 20.0, 3.0], [200.0, 50.0, -7.0]], np.float32)
    scale, tx, ty = 0.5, -4.0, 12.0
    crop_points = image_points.copy()
    crop_points[:, :2] = scale * image_points[:, :2] + [tx, ty]
    crop_points[:, 2] = scale * image_points[:, 2]
    mesh = Mesh(crop_points, np.zeros((0, 3)), normals=np.array([[0, 0, 1], [1, 0, 0]]))
    back = to_image_space(mesh, scale, tx, ty)
    np.testing.assert_allclose(back.vertices, image_points, atol=1e-4)
    np.testing.assert_array_equal(back.normals, mesh.normals)


def test_sample_colors_is_bilinear_and_clamped():
    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 0] = np.arange(5) * 50  # red grows along x
    image[..., 1] = (np.arange(4) * 60)[:, None]  # green grows along y
    vertices = np.array([[1.5, 2.0, 0], [0, 0, 0], [-3, 9, 0], [4, 3.5, 0]], np.float32)
    colors = sample_colors(Mesh(vertices, np.zeros((0, 3))), image).colors
    np.testing.assert_array_equal(colors[:, 0], [75, 0, 0, 200])
    np.testing.assert_array_equal(colors[:, 1], [120, 0, 180, 180])


def test_decimate_keeps_shape_orientation_and_colours(sphere_volume):
    mesh = volume_to_mesh(sphere_volume)
    red_top = np.where(mesh.vertices[:, 1:2] < 90, [255, 0, 0], [0, 0, 255]).astype(np.uint8)
    mesh = Mesh(mesh.vertices, mesh.faces, red_top, mesh.normals)
    small = decimate(mesh, 2000)
    assert abs(small.num_faces - 2000) <= 20
    assert small.signed_volume() == pytest.approx(mesh.signed_volume(), rel=0.03)
    top = small.vertices[:, 1] < 85
    assert (small.colors[top] == [255, 0, 0]).all()
    assert decimate(mesh, 10**9) is mesh


def test_stray_voxels_that_averaging_dissolves_give_an_empty_mesh():
    volume = np.zeros((200, 192, 192), np.float32)
    volume[100, 96, 96] = 0.9  # above the level alone, below it once averaged with neighbours
    mesh = volume_to_mesh(volume)
    assert mesh.vertices.shape == (0, 3) and mesh.faces.shape == (0, 3)


# --- height maps: the service's mesh ----------------------------------------------------------


def coarse_ball(centre_dyx, radii_dyx, slices=200, size=48, factor=4) -> CoarseVolume:
    """Logits at 48 x 48 whose 4x upsampling is a soft ball (centre, radii in full pixels)."""
    d = np.arange(slices, dtype=np.float32)[:, None, None]
    yx = (np.arange(size, dtype=np.float32) + 0.5) * factor - 0.5  # coarse cell centres
    y, x = yx[None, :, None], yx[None, None, :]
    axes = zip((d, y, x), centre_dyx, radii_dyx, strict=True)
    r = np.sqrt(sum(((g - c) / s) ** 2 for g, c, s in axes))
    return CoarseVolume((4.0 * (1.0 - r) * min(radii_dyx)).astype(np.float32), factor)


def front_vertices(mesh: Mesh) -> np.ndarray:
    """The front-most vertex at each (x, y) of a height-map mesh."""
    v = mesh.vertices
    order = np.lexsort((-v[:, 2], v[:, 1], v[:, 0]))
    xy = v[order, :2]
    first = np.r_[True, (xy[1:] != xy[:-1]).any(1)]
    return v[order[first]]


def exact_front(volume: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Each pixel's front-most crossing of `level` along d, by linear interpolation (NaN
    where the ray misses): the reference the height map must reproduce."""
    inside = volume > level
    last = volume.shape[0] - 1 - inside[::-1].argmax(0)
    a = np.take_along_axis(volume, last[None], 0)[0] - level
    b = np.take_along_axis(volume, np.minimum(last + 1, volume.shape[0] - 1)[None], 0)[0] - level
    return np.where(inside.any(0), last + a / np.maximum(a - b, 1e-9), np.nan)


@pytest.mark.parametrize("step", [1, 2])
def test_height_map_of_a_sphere_is_closed_round_and_outward(sphere_volume, step):
    mesh = height_map_mesh(sphere_volume, step=step)
    assert as_trimesh(mesh).is_watertight
    centre = np.array([100, 90, 10])
    radius = np.linalg.norm(mesh.vertices - centre, axis=1)
    # front and back caps are exact; the rim (the silhouette's grid points, inside it)
    # is short of the equator by up to a grid cell
    assert np.median(np.abs(radius - 40)) < 0.3
    assert radius.max() < 40.5 and radius.min() > 40 - 4 * step
    assert mesh.signed_volume() == pytest.approx(4 / 3 * np.pi * 40**3, rel=0.06)
    outward = (mesh.vertices - centre) / radius[:, None]
    assert np.median(np.einsum("ij,ij->i", outward, mesh.normals)) > 0.95


def test_height_map_of_coarse_logits_is_the_upsampled_volumes_surface():
    """The crossings found on 48 x 48 logits equal the full volume's per-pixel crossings:
    the full volume is never made, the surface is the same."""
    coarse = coarse_ball((120, 100, 90), (60, 70, 60))
    assert coarse.probability().shape == coarse.shape == (200, 192, 192)
    mesh = height_map_mesh(coarse, step=1)
    front = front_vertices(mesh)
    x, y = front[:, 0].astype(int), front[:, 1].astype(int)
    # the volume's logits: the crossing is interpolated linearly in them
    logits = torch.nn.functional.interpolate(
        torch.from_numpy(coarse.logits)[None], scale_factor=4.0, mode="bilinear"
    )[0].numpy()
    expected = exact_front(logits, level=0.0)[y, x] - 100
    np.testing.assert_allclose(front[:, 2], expected, atol=0.02)
    assert as_trimesh(mesh).is_watertight and mesh.signed_volume() > 0


def test_height_map_has_no_stair_steps_in_z():
    """A tilted plane's front comes out as that plane to a tenth of a voxel (what linear
    interpolation of a soft edge allows): no terraces at the slices."""
    d = np.arange(200, dtype=np.float32)[:, None, None]
    y, x = np.mgrid[:192, :192].astype(np.float32)
    plane = 120 + 0.13 * x - 0.07 * y  # the surface, in slices
    volume = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (plane[None] - d), -50, 50)))
    mesh = height_map_mesh(volume.astype(np.float32))
    front = front_vertices(mesh)
    fit = np.c_[front[:, :2], np.ones(len(front))]
    coef, *_ = np.linalg.lstsq(fit, front[:, 2], rcond=None)
    np.testing.assert_allclose(coef, [0.13, -0.07, 20.0], atol=2e-3)
    assert np.abs(fit @ coef - front[:, 2]).max() < 0.1


def test_height_map_ignores_flicker_in_front_of_the_face(sphere_volume):
    noisy = sphere_volume.copy()
    noisy[190, 90, 100] = noisy[185, 91, 101] = 0.9  # lone voxels in front of the ball
    clean = height_map_mesh(sphere_volume, step=1)
    mesh = height_map_mesh(noisy, step=1)
    np.testing.assert_allclose(mesh.vertices, clean.vertices, atol=1e-5)


def test_height_map_closes_at_the_crop_border():
    volume = ball_volume((100, 0, 96), (50, 60, 50))  # cut in half by the top border
    mesh = height_map_mesh(volume)
    assert as_trimesh(mesh).is_watertight and mesh.signed_volume() > 0
    assert mesh.vertices[:, 1].min() < 1.0


def test_a_volume_that_is_not_one_interval_per_ray_falls_back_to_marching_cubes():
    # two slabs one behind the other on every ray: not a height map
    volume = np.maximum(
        ball_volume((60, 96, 96), (20, 60, 60)), ball_volume((150, 96, 96), (20, 60, 60))
    )
    assert height_map_mesh(volume) is None
    mesh = surface_mesh(volume)
    reference = volume_to_mesh(volume)
    np.testing.assert_array_equal(mesh.faces, reference.faces)
    # one solid: the height map
    assert surface_mesh(ball_volume((100, 96, 96), (40, 40, 40))).num_faces > 0


def test_height_map_of_nothing_is_empty():
    assert height_map_mesh(np.zeros((20, 16, 16), np.float32)).num_faces == 0
    assert height_map_mesh(CoarseVolume(np.full((20, 4, 4), -5.0, np.float32))).num_faces == 0
    with pytest.raises(ValueError):
        height_map_mesh(np.zeros((16, 16), np.float32))


def test_coarse_volume_pooling_matches_the_full_volume():
    coarse = CoarseVolume(np.random.default_rng(0).normal(0, 3, (20, 12, 12)).astype(np.float32))
    full = torch.from_numpy(coarse.probability())[None]
    np.testing.assert_allclose(coarse.pooled(), pool_volume(full)[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(coarse), coarse.probability())
