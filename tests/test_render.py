"""The z-buffer renderer on meshes whose pictures are known."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import trimesh

from facerecon import render
from facerecon.errors import InputError
from facerecon.mesh import Mesh
from facerecon.pose import Pose, rotate_mesh_vertices
from facerecon.render import FILL, frontal_view, render_depth, render_views

FLIP_Y = np.array([1.0, -1.0, 1.0])


@functools.cache
def gl_available() -> bool:
    try:
        render._GLRenderer().ctx.release()
    except Exception:  # noqa: BLE001 - no moderngl or no EGL: the torch path only
        return False
    return True


@pytest.fixture(autouse=True, params=["torch", "gl"])
def renderer(request, monkeypatch):
    """Every test of the pictures runs on both rasterisers: torch and OpenGL (EGL)."""
    if request.param == "gl" and not gl_available():
        pytest.skip("no headless OpenGL context (moderngl + EGL) here")
    monkeypatch.setenv("FACERECON_RENDERER", request.param)
    return request.param


def sphere(radius: float = 50.0, colors=None) -> Mesh:
    """An icosphere in the mesh frame (y down); trimesh winds it for y up."""
    ico = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return Mesh(ico.vertices * FLIP_Y + [100, 100, 0], ico.faces, colors).with_normals()


def two_coloured_sphere() -> Mesh:
    """Red on the mesh's -x half, blue on its +x half."""
    mesh = sphere()
    left = mesh.vertices[:, 0] < 100
    colors = np.where(left[:, None], [255, 0, 0], [0, 0, 255]).astype(np.uint8)
    return Mesh(mesh.vertices, mesh.faces, colors, mesh.normals)


def square(z: float, half: float, color) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A square facing the camera (+z), wound counter-clockwise in the y-up frame."""
    x = np.array([-half, half, half, -half])
    y_up = np.array([-half, -half, half, half])
    vertices = np.stack([x, -y_up, np.full(4, z)], axis=1)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    return vertices, faces, np.tile(np.array(color, np.uint8), (4, 1))


def test_silhouette_of_a_sphere_has_the_expected_area():
    size = 128
    alpha = render_views(sphere(), [(0, 0), (40, -20)], size=size)[..., 3]
    expected = np.pi * (FILL * size / 2) ** 2
    for view in alpha:
        assert set(np.unique(view)) == {0, 255}
        assert (view == 255).sum() == pytest.approx(expected, rel=0.02)


def test_output_format_and_background():
    images = render_views(sphere(), [(0, 0)], size=64, background=(10, 20, 30))
    assert images.shape == (1, 64, 64, 4) and images.dtype == np.uint8
    assert (images[0, 0, 0] == [10, 20, 30, 255]).all()
    transparent = render_views(sphere(), [(0, 0)], size=64)
    assert (transparent[0, 0, 0] == 0).all() and transparent[0, 32, 32, 3] == 255


def test_lambert_shading_is_brightest_facing_the_camera():
    grey = render_views(sphere(), [(0, 0)], size=128)[0, ..., 0].astype(int)
    centre, rim = grey[64, 64], grey[64, 12]
    assert centre > rim + 60
    assert centre == pytest.approx(180, abs=3)  # ambient + diffuse = 1 on grey albedo


def test_the_nearer_surface_wins_whatever_the_face_order():
    near = square(10.0, 20.0, (255, 0, 0))
    far = square(-10.0, 40.0, (0, 255, 0))
    for first, second in ((near, far), (far, near)):
        offset = len(first[0])
        mesh = Mesh(
            np.vstack([first[0], second[0]]),
            np.vstack([first[1], second[1] + offset]),
            np.vstack([first[2], second[2]]),
        )
        image = render_views(mesh, [(0, 0)], size=64)[0]
        assert (image[32, 32, :3] > 0).tolist() == [True, False, False]  # red in the middle
        assert (image[32, 16, :3] > 0).tolist() == [False, True, False]  # green around it


def test_back_faces_are_culled():
    vertices, faces, colors = square(0.0, 20.0, (255, 255, 255))
    away = Mesh(vertices, faces[:, ::-1], colors)
    assert render_views(away, [(0, 0)], size=32)[..., 3].max() == 0
    assert render_views(away, [(180, 0)], size=32)[..., 3].max() == 255


@pytest.mark.parametrize("yaw, seen", [(90, "red"), (-90, "blue")])
def test_yaw_shows_the_expected_side(yaw, seen):
    # yaw > 0 turns the face towards the image's right, so its -x side comes to the camera
    image = render_views(two_coloured_sphere(), [(yaw, 0)], size=64)[0]
    visible = image[..., 3] == 255
    red = (image[..., 0] > image[..., 2]) & visible
    blue = (image[..., 2] > image[..., 0]) & visible
    majority, minority = (red, blue) if seen == "red" else (blue, red)
    assert majority.sum() > 0.98 * visible.sum() and minority.sum() < 0.02 * visible.sum()


def test_pitch_up_shows_the_underside():
    mesh = sphere()
    below = mesh.vertices[:, 1] > 100  # y down: larger y is lower
    colors = np.where(below[:, None], [0, 255, 0], [255, 0, 255]).astype(np.uint8)
    image = render_views(Mesh(mesh.vertices, mesh.faces, colors), [(0, 90)], size=64)[0]
    visible = image[..., 3] == 255
    assert (image[visible, 1] > image[visible, 0]).mean() > 0.98


def test_depth_of_a_sphere():
    depth = render_depth(sphere(radius=50.0), [(0, 0), (70, 10)], size=65)
    assert np.isnan(depth[:, 0, 0]).all()
    np.testing.assert_allclose(depth[:, 32, 32], 50.0, atol=0.3)


def test_frontal_view_undoes_the_pose():
    mesh = two_coloured_sphere()
    # make it asymmetric so that a wrong rotation shows: a long nose along +z
    nose = trimesh.creation.box(extents=(10, 10, 60)).apply_translation((0, 0, 50))
    vertices = np.vstack([mesh.vertices, nose.vertices * FLIP_Y + [100, 100, 0]])
    faces = np.vstack([mesh.faces, nose.faces + mesh.num_vertices])
    colors = np.vstack([mesh.colors, np.full((len(nose.vertices), 3), 200, np.uint8)])
    head = Mesh(vertices, faces, colors)
    pose = Pose(yaw=35.0, pitch=-20.0, roll=15.0)
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    posed = Mesh(rotate_mesh_vertices(vertices, pose.matrix(), centre), faces, colors)
    expected = render_views(head, [(0, 0)], size=96)[0].astype(int)
    frontal = frontal_view(posed, pose, size=96).astype(int)
    posed_view = render_views(posed, [(0, 0)], size=96)[0].astype(int)

    def differing(image):  # fraction of pixels that clearly differ from the expected view
        return (np.abs(image - expected).max(axis=-1) > 40).mean()

    assert differing(frontal) < 0.01
    assert differing(posed_view) > 0.05


def test_empty_mesh_renders_background_only():
    empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3)))
    assert (
        render_views(empty, [(0, 0)], size=16, background=(1, 2, 3))[..., :3] == [1, 2, 3]
    ).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"angles": []},
        {"angles": [(float("nan"), 0.0)]},
        {"angles": [(0.0, 0.0)], "size": 4},
        {"angles": [(0.0, 0.0)], "background": (0, 0, 300)},
        {"angles": [(0.0, 0.0)], "background": "red"},
        {"angles": [(0.0, 0.0)], "background": (0.5, 0, 0)},
        {"angles": [(0.0, 0.0)], "size": 64.5},
    ],
)
def test_bad_requests_raise_input_error(kwargs):
    with pytest.raises(InputError):
        render_views(sphere(), **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    mesh = two_coloured_sphere()
    angles = [(0, 0), (45, 10), (-80, -20)]
    cpu = render_views(mesh, angles, device="cpu")
    cuda = render_views(mesh, angles, device="cuda")
    assert (cpu.astype(int) - cuda).__abs__().max() <= 1
    assert (cpu[..., 3] != cuda[..., 3]).mean() < 1e-3


def test_opengl_and_torch_draw_the_same_pictures(renderer, monkeypatch):
    """The OpenGL path (the default where a headless context can be made) against the torch
    rasteriser: the same pixels covered but for a few on edges, the same colours."""
    if renderer != "gl":
        pytest.skip("compares the two: once is enough")
    mesh = two_coloured_sphere()
    angles = [(0, 0), (45, 10), (-80, -20), (180, 0)]
    gl = render_views(mesh, angles, 128, (10, 20, 30))
    monkeypatch.setenv("FACERECON_RENDERER", "torch")
    reference = render_views(mesh, angles, 128, (10, 20, 30))
    assert gl.shape == reference.shape and gl.dtype == np.uint8
    differ = (gl != reference).any(-1)
    assert differ.mean() < 0.002  # pixels on triangle edges the two rules share out differently
    assert np.abs(gl.astype(int) - reference)[~differ].max() == 0
    assert np.abs(gl.astype(int) - reference).mean() < 0.2
    with pytest.raises(ValueError, match="FACERECON_RENDERER"):
        monkeypatch.setenv("FACERECON_RENDERER", "vulkan")
        render_views(mesh, angles, 64)


def test_one_rotation_per_view_draws_what_separate_calls_draw():
    mesh = two_coloured_sphere()
    turns = np.stack([Pose(20, -10, 5).matrix().T, Pose(-50, 0, 0).matrix()])
    both = render_views(mesh, [(0, 0), (10, 5)], 64, rotation=turns)
    np.testing.assert_array_equal(both[0], render_views(mesh, [(0, 0)], 64, rotation=turns[0])[0])
    np.testing.assert_array_equal(both[1], render_views(mesh, [(10, 5)], 64, rotation=turns[1])[0])
    with pytest.raises(ValueError, match="one 3x3 per view"):
        render_views(mesh, [(0, 0)], 64, rotation=turns)
