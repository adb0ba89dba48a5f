"""Recognition-ready views: aligned chips, pose-matched views, seen/guessed visibility."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.ndimage import map_coordinates

from facerecon.chips import (
    ARCFACE_112,
    DLIB_150,
    TEMPLATE68,
    align_chip,
    layout_points,
    project,
    seen_vertices,
    template_landmarks68,
    turn_to,
)
from facerecon.crop import CropTransform
from facerecon.errors import InputError
from facerecon.mesh import Mesh
from facerecon.pose import Pose, rotation_matrix
from facerecon.reconstructor import ReconstructOptions, Reconstructor
from facerecon.render import render_depth, render_views


@pytest.fixture(scope="module")
def rec(tiny_weights) -> Reconstructor:
    return Reconstructor(tiny_weights, device="cpu")


def sphere(radius: float = 50.0, centre=(100.0, 100.0, 0.0)) -> Mesh:
    s = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    # trimesh winds counter-clockwise seen from outside in its y-up frame; the Mesh frame
    # is y-down with the same winding rule once y is flipped, so flip y only
    v = s.vertices * (1.0, -1.0, 1.0) + centre
    return Mesh(v, s.faces).with_normals()


@pytest.mark.parametrize("layout", [ARCFACE_112, DLIB_150])
def test_chip_puts_the_five_points_on_the_template(layout):
    # a source image whose pixels hold their own coordinates: the chip, sampled at the
    # template's points, must read back the five source points
    rng = np.random.default_rng(1)
    angle, scale, shift = 0.3, 1.7, np.array([40.0, 25.0])
    c, s = np.cos(angle), np.sin(angle)
    points = layout.template @ (scale * np.array([[c, s], [-s, c]])) + shift
    points += rng.normal(0.0, 0.01, points.shape)  # not exactly a similarity
    ys, xs = np.mgrid[0:400, 0:400].astype(np.float32)
    source = np.stack([xs, ys, np.zeros_like(xs)], axis=-1)
    chip = align_chip(source, points, layout)
    assert chip.shape == (layout.size, layout.size, 3)
    read = np.stack(
        [map_coordinates(chip[..., k], layout.template[:, ::-1].T, order=1) for k in (0, 1)],
        axis=1,
    )
    np.testing.assert_allclose(read, points, atol=0.1)


def test_chip_keeps_rgba_and_size():
    image = np.zeros((200, 200, 4), np.uint8)
    points = layout_points(np.tile([[100.0, 100.0]], (68, 1)) + TEMPLATE68[:, :2] * 80, DLIB_150)
    assert align_chip(image, points, DLIB_150).shape == (150, 150, 4)
    assert align_chip(image, points, ARCFACE_112).shape == (112, 112, 4)


def test_projection_matches_the_renderer():
    mesh = sphere()
    rotation = rotation_matrix(35.0, -20.0)
    size = 64
    depth = render_depth(mesh, [(0.0, 0.0)], size, rotation=rotation)[0]
    pixels = np.rint(project(mesh, mesh.vertices, rotation, size)).astype(int)
    assert (pixels >= 0).all() and (pixels < size).all()
    # vertices facing the rotated camera land on pixels whose rendered depth is theirs
    turned = (mesh.vertices * (1, -1, 1) - (100.0, -100.0, 0.0)) @ rotation.T
    facing = turned[:, 2] > 0.5 * 50.0
    surface = depth[pixels[facing, 1], pixels[facing, 0]]
    np.testing.assert_allclose(surface, turned[facing, 2], atol=2.0)


def test_template_landmarks_follow_the_framing_and_pose():
    mesh = sphere()
    transform = CropTransform(scale=1.2, tx=-20.0, ty=-30.0)
    frontal = template_landmarks68(mesh, Pose(0.0, 0.0, 0.0), transform)
    lo, hi = frontal[:, :2].min(axis=0), frontal[:, :2].max(axis=0)
    middle = (transform.size - 1) / 2
    centre = (np.array([middle, middle]) - (transform.tx, transform.ty)) / transform.scale
    np.testing.assert_allclose((lo + hi) / 2, centre, atol=1e-3)
    assert (hi - lo).max() == pytest.approx(192 / 1.15 / 1.2, rel=1e-4)
    assert frontal[36, 0] < frontal[45, 0]  # the subject's right eye is on the image's left
    assert frontal[8, 1] > frontal[27, 1]  # chin below the nose bridge (y down)
    turned = template_landmarks68(mesh, Pose(40.0, 0.0, 0.0), transform)
    # yaw > 0 turns the face to the image's right: the nose tip moves right of the eyes' middle
    eyes = (turned[36, 0] + turned[45, 0]) / 2
    assert turned[30, 0] > eyes


def test_template_landmarks_sit_on_given_points_at_the_templates_depths():
    mesh = sphere()
    transform = CropTransform(scale=1.2, tx=-20.0, ty=-30.0)
    framed = template_landmarks68(mesh, Pose(30.0, 0.0, 0.0), transform)
    points = framed[:, :2] * 1.5 + [7.0, -4.0]  # the face's own points: larger, elsewhere
    placed = template_landmarks68(mesh, Pose(30.0, 0.0, 0.0), transform, points)
    np.testing.assert_allclose(placed[:, :2], points, atol=1e-4)
    relief = placed[:, 2] - placed[30, 2]  # depths relative to the nose tip scale with them
    np.testing.assert_allclose(relief, 1.5 * (framed[:, 2] - framed[30, 2]), rtol=1e-4, atol=1e-3)


def test_turn_to_reaches_the_target_pose():
    pose, target = Pose(-50.0, 12.0, 8.0), Pose(30.0, -10.0, 0.0)
    forward = turn_to(pose, target) @ pose.matrix() @ np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(forward, target.matrix() @ np.array([0.0, 0.0, 1.0]), atol=1e-9)


def test_seen_vertices_are_the_camera_facing_half():
    mesh = sphere()
    seen = seen_vertices(mesh)
    toward = mesh.vertices[:, 2] > 5.0  # clearly on the camera's side
    away = mesh.vertices[:, 2] < -5.0
    assert seen[toward].mean() > 0.95
    assert seen[away].mean() == 0.0


def test_a_hidden_surface_is_not_seen():
    # a small sphere right behind a big one is hidden in the photo even where it faces us
    front, back = sphere(50.0, (100, 100, 60)), sphere(20.0, (100, 100, -60))
    both = Mesh(
        np.concatenate([front.vertices, back.vertices]),
        np.concatenate([front.faces, back.faces + front.num_vertices]),
    ).with_normals()
    seen = seen_vertices(both)
    assert seen[front.num_vertices :].mean() == 0.0
    assert seen[: front.num_vertices].mean() > 0.4


def test_views_report_chips_and_visibility(rec, astronaut):
    options = ReconstructOptions(
        views=((0.0, 0.0), (180.0, 0.0)),
        view_size=96,
        chips=("arcface112", "dlib150"),
        visibility=True,
    )
    result = rec(astronaut, options=options)
    at_input, behind = result.views
    for view in (*result.views, result.frontal):
        assert view.chips["arcface112"].shape == (112, 112, 4)
        assert view.chips["dlib150"].shape == (150, 150, 4)
        assert view.points5.shape == (5, 2)
        assert view.visibility.shape == (96, 96) and view.visibility.dtype == bool
        head = view.image[..., 3] > 0
        assert not (view.visibility & ~head).any()  # background is never "seen"
    assert at_input.visible_fraction > 0.8  # the photo's own view: mostly seen
    assert behind.visible_fraction < 0.2  # from behind: mostly guessed


def test_pose_matched_view_copies_the_reference_pose(rec, astronaut):
    reference = np.ascontiguousarray(astronaut[:, ::-1])  # a second photo
    target = rec.estimate_pose(reference)
    options = ReconstructOptions(view_size=64, frontal=False)
    result = rec(astronaut, options=options, pose_reference=reference)
    assert result.matched is not None
    assert (result.matched.yaw, result.matched.pitch) == (target.yaw, target.pitch)
    expected = render_views(result.mesh, [(0.0, 0.0)], 64, rotation=turn_to(result.pose, target))[0]
    np.testing.assert_array_equal(result.matched.image, expected)


def test_target_pose_view_and_checks(rec, astronaut):
    options = ReconstructOptions(view_size=64, frontal=False, target_pose=Pose(45.0, 10.0, 0.0))
    result = rec(astronaut, options=options)
    assert (result.matched.yaw, result.matched.pitch) == (45.0, 10.0)
    assert result.matched.image.shape == (64, 64, 4)
    with pytest.raises(InputError) as bad:
        ReconstructOptions(target_pose=Pose(200.0, 0.0, 0.0)).validate()
    assert bad.value.field == "options.target_pose"
    with pytest.raises(InputError) as bad:
        ReconstructOptions(chips=("vgg",)).validate()
    assert bad.value.field == "options.chip_layouts"
    with pytest.raises(InputError) as bad:
        rec(astronaut, options=options, pose_reference=b"not an image")
    assert bad.value.field == "options.pose_reference_image"


def test_wire_round_trip(rec, astronaut_jpeg):
    import io

    from PIL import Image

    from facerecon.server import convert
    from facerecon_client.requests import build_request

    request = build_request(
        astronaut_jpeg,
        views=[(0.0, 0.0)],
        view_size=64,
        frontal_view=True,
        chip_layouts=["dlib150", "arcface112"],
        visibility=True,
        target_pose=(30.0, 0.0),
    )
    parsed = convert.parse_request(request, "id")
    assert parsed.options.chips == ("dlib150", "arcface112")
    assert parsed.options.target_pose == Pose(30.0, 0.0, 0.0)
    result = rec.finish(*_prepared(rec, parsed), parsed.options)
    reply = convert.build_response(result, parsed)
    view = reply.views[0]
    assert [(c.width, c.height) for c in view.chips] == [(150, 150), (112, 112)]
    assert len(view.landmarks.xy) == 10
    mask = np.asarray(Image.open(io.BytesIO(view.visibility_mask)))
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    head = np.asarray(Image.open(io.BytesIO(view.image)))[..., 3] > 0
    assert view.visible_fraction == pytest.approx((mask > 0).sum() / head.sum(), rel=1e-6)
    assert reply.HasField("matched_view") and reply.matched_pose.yaw_deg == 30.0
    with pytest.raises(InputError) as bad:
        convert.parse_request(build_request(astronaut_jpeg, pose_reference=b""), "id")
    assert bad.value.field == "options.pose_reference_image"


def _prepared(rec, parsed):
    face = rec.prepare(parsed.image, parsed.face_box, parsed.landmarks)
    (volume,) = rec.predict([face])
    return face, volume
