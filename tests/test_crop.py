"""Framing, CropTransform and normalise_face: geometry, the warp, and bad faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facerecon.crop import (
    _FIVE_POINTS,
    _OUTLINE,
    CROP_SIZE,
    FRAMING,
    CropTransform,
    Framing,
    normalise_face,
)
from facerecon.errors import InputError

SHARED = Path(__file__).parents[1].parent / "shared"
ICT = SHARED / "facemodel" / "ict_face_light.npz"
MIDDLE = (CROP_SIZE - 1) / 2


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """DEVELOPERS.md's R = Rz(roll) Rx(pitch) Ry(yaw), in a y-up frame."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def project(
    points_yup: np.ndarray, angles: tuple[float, float, float], scale: float, at
) -> np.ndarray:
    """Rotate y-up points, project orthographically into an image (y down)."""
    rotated = points_yup @ rotation(*angles).T
    return rotated[:, :2] * (scale, -scale) + at


def gradient_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 20 + 200 * x / max(width - 1, 1)
    green = 230 - 200 * y / max(height - 1, 1)
    return np.stack([red, green, (red + green) / 2], axis=2).round().astype(np.uint8)


def expected_gradient(points: np.ndarray, height: int, width: int) -> np.ndarray:
    red = 20 + 200 * points[..., 0] / max(width - 1, 1)
    green = 230 - 200 * points[..., 1] / max(height - 1, 1)
    return np.stack([red, green, (red + green) / 2], axis=-1)


def test_framing_centres_the_face_and_sizes_it() -> None:
    t = FRAMING.transform(300.0, 200.0, 150.0)
    np.testing.assert_allclose(t.to_crop([300.0, 200.0]), [MIDDLE, MIDDLE])
    corners = t.to_crop([[225.0, 125.0], [375.0, 275.0]])
    np.testing.assert_allclose(corners[1] - corners[0], [CROP_SIZE / FRAMING.side_over_face] * 2)
    assert Framing(2.0, size=64).transform(0, 0, 32.0).scale == 1.0
    with pytest.raises(AttributeError):
        FRAMING.side_over_face = 2.0  # frozen: one definition for everyone


def test_whole_image_maps_the_longer_side_onto_the_crop() -> None:
    t = CropTransform.whole_image(100, 400)
    np.testing.assert_allclose(
        t.to_crop([[-0.5, -0.5], [399.5, 99.5], [199.5, 49.5]]),
        [[-0.5, MIDDLE - 24], [CROP_SIZE - 0.5, MIDDLE + 24], [MIDDLE, MIDDLE]],
    )


def test_transform_round_trips_points_and_scales_depth() -> None:
    t = CropTransform(0.5, 10.0, -4.0)
    points = np.array([[10.0, 20.0, 8.0], [-3.0, 7.5, -2.0]])
    np.testing.assert_allclose(t.to_crop(points), [[15.0, 6.0, 4.0], [8.5, -0.25, -1.0]])
    np.testing.assert_allclose(t.to_image(t.to_crop(points)), points)
    np.testing.assert_allclose(t.matrix @ [10.0, 20.0, 1.0], [15.0, 6.0])


def test_68_landmarks_frame_their_bounding_box() -> None:
    points = np.random.default_rng(0).uniform((100, 50), (260, 230), (68, 2))
    lo, hi = points.min(axis=0), points.max(axis=0)
    t = CropTransform.from_landmarks(points)
    expected = FRAMING.transform(*(lo + hi) / 2, (hi - lo).max())
    assert t == expected


@pytest.mark.parametrize("angles", [(0, 0, 0), (40, 0, 0), (-55, 20, 0), (25, -15, 30)])
def test_five_points_recover_the_outline_box_of_any_pose(angles) -> None:
    # The mean face itself, posed: the 3D fit must find its 68-landmark box exactly
    # (a 2D similarity fit is 10-15 % off in centre once the head turns).
    yup = (1, -1, 1)  # the module's constants are in image axes (y down)
    five = project(_FIVE_POINTS * yup, angles, 9.0, (320, 240))
    outline = project(_OUTLINE * yup, angles, 9.0, (320, 240))
    lo, hi = outline.min(axis=0), outline.max(axis=0)
    t = CropTransform.from_landmarks(five)
    expected = FRAMING.transform(*(lo + hi) / 2, (hi - lo).max())
    assert t.scale == pytest.approx(expected.scale, rel=1e-6)
    assert (t.tx, t.ty) == pytest.approx((expected.tx, expected.ty), abs=1e-4)


@pytest.mark.skipif(not ICT.exists(), reason="needs ../shared/facemodel")
def test_five_points_estimate_the_68_landmark_box_of_real_identities() -> None:
    model = np.load(ICT)
    index = model["landmarks68"]
    neutral, identity = model["neutral"][index], model["identity_basis"][:, index]
    rng = np.random.default_rng(0)
    centre_errors, side_ratios = [], []
    for _ in range(200):
        shape = neutral + np.tensordot(rng.standard_normal(100), identity, 1)
        angles = (rng.uniform(-60, 60), rng.uniform(-30, 30), rng.uniform(-30, 30))
        points = project(shape, angles, 10.0, (400, 300))
        five = np.stack(
            [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
        )
        five += rng.normal(0, 0.02 * 65, five.shape)  # 2 % of the eye distance
        truth = CropTransform.from_landmarks(points)
        estimate = CropTransform.from_landmarks(five)
        centre = estimate.to_image([MIDDLE, MIDDLE]) - truth.to_image([MIDDLE, MIDDLE])
        centre_errors.append(np.hypot(*centre) * truth.scale / CROP_SIZE)
        side_ratios.append(truth.scale / estimate.scale)
    assert np.mean(centre_errors) < 0.05 and np.max(centre_errors) < 0.12
    assert abs(np.mean(side_ratios) - 1) < 0.03 and 0.85 < min(side_ratios)
    assert max(side_ratios) < 1.15


def test_box_framing_follows_the_calibration() -> None:
    t = CropTransform.from_box([100, 100, 200, 220])
    side = 0.92 * np.sqrt(100 * 120)
    assert t == FRAMING.transform(150.0, 160.0 + 0.08 * 120, side)


@settings(max_examples=60, deadline=2000, derandomize=True)
@given(
    height=st.integers(32, 700),
    width=st.integers(32, 700),
    fx=st.floats(0.05, 0.95),
    fy=st.floats(0.05, 0.95),
    side=st.floats(0.03, 2.5),
    use_box=st.booleans(),
)
def test_normalise_face_samples_the_image_where_the_transform_says(
    height: int, width: int, fx: float, fy: float, side: float, use_box: bool
) -> None:
    image = gradient_image(height, width)
    face = max(side * max(height, width), 20.0)
    cx, cy = fx * width, fy * height
    if use_box:
        top = cy - face / 2 - 0.08 * face  # so that the face's centre is (cx, cy)
        crop = normalise_face(image, box=(cx - face / 2, top, cx + face / 2, top + face))
    else:
        square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [0, 0]]) * face / 2 + (cx, cy)
        crop = normalise_face(image, landmarks=np.concatenate([square] * 13 + [square[:3]]))
    t = crop.transform
    assert crop.image.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.image.dtype == np.uint8
    points = np.random.default_rng(0).uniform(-50, 250, (20, 3))
    np.testing.assert_allclose(t.to_image(t.to_crop(points)), points, rtol=1e-9, atol=1e-9)
    # A linear gradient survives both block averaging and bilinear sampling, so every crop
    # pixel whose source lies inside the image (one pixel in from the edge) must match it.
    grid = np.stack(np.meshgrid(np.arange(CROP_SIZE), np.arange(CROP_SIZE)), axis=-1)
    source = t.to_image(grid.reshape(-1, 2).astype(np.float64)).reshape(grid.shape)
    margin = 1.0 + 2.0 / t.scale  # nearer the edge, black comes in
    inside = (
        (source[..., 0] > margin) & (source[..., 0] < width - 1 - margin)
        & (source[..., 1] > margin) & (source[..., 1] < height - 1 - margin)
    )  # fmt: skip
    error = np.abs(crop.image[inside] - expected_gradient(source[inside], height, width))
    assert error.max(initial=0) <= 2.0


def test_big_images_are_shrunk_without_aliasing() -> None:
    checkerboard = (np.indices((1800, 2400)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = np.repeat(checkerboard[:, :, None], 3, axis=2)
    crop = normalise_face(image).image
    middle = crop[30:160, 20:170].astype(np.float64)  # inside the image (4:3 → bands at top/bottom)
    assert abs(middle.mean() - 127.5) < 2 and middle.std() < 2
    assert (crop[:20] == 0).all() and (crop[-20:] == 0).all()  # black border past the image


def test_a_face_crop_sent_whole_fills_the_crop() -> None:
    image = gradient_image(200, 200)
    crop = normalise_face(image)
    np.testing.assert_allclose(crop.image, gradient_image(192, 192), atol=2)


BAD_BOXES = [
    ([1, 2, 3], "4 numbers"),
    ("a box", "4 numbers"),
    ([[1, 2], [3, 4], [5, 6]], "4 numbers"),
    ([10, 10, float("nan"), 50], "finite"),
    ([10, 10, float("inf"), 50], "finite"),
    ([-1e300, -1e300, 1e300, 1e300], "finite"),  # would overflow
    ([50, 10, 10, 60], "x1 > x0"),
    ([10, 60, 50, 60], "y1 > y0"),
    ([1000, 1000, 1100, 1100], "outside"),
    ([-300, 10, -100, 200], "outside"),
    ([100, 100, 105, 106], "too small"),
    ([-99_800, -115_850, 100_200, 84_150], "far larger"),  # centred on (200, 150)
]


@pytest.mark.parametrize(("box", "message"), BAD_BOXES)
def test_bad_boxes_are_refused(box, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        normalise_face(np.zeros((300, 400, 3), np.uint8), box=box)
    assert caught.value.field == "face_box"


BAD_LANDMARKS = [
    (np.zeros((6, 2)), "5 points"),
    (np.zeros((5, 3)), "5 or 68"),
    ([[1, 2], [3]], "5 or 68"),
    (np.full((5, 2), np.nan), "finite"),
    ([(1e300, 0), (-1e300, 0)] * 34, "finite"),
    (np.full((68, 2), 150.0), "too small"),
    (np.full((5, 2), 150.0), "too small"),
    (np.random.default_rng(0).uniform(900, 1000, (68, 2)), "outside"),
]


@pytest.mark.parametrize(("landmarks", "message"), BAD_LANDMARKS)
def test_bad_landmarks_are_refused(landmarks, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        normalise_face(np.zeros((300, 400, 3), np.uint8), landmarks=landmarks)
    assert caught.value.field == "landmarks"


EXTREMES = [1e8, -1e8, 1e300, -1e300, 1.7e308, -1.7e308, np.inf, -np.inf, np.nan]
ANY_FLOAT = st.one_of(st.floats(-100, 200), st.sampled_from(EXTREMES), st.floats())


@pytest.mark.filterwarnings("error")  # no overflow or invalid-value warnings either
@settings(max_examples=200, deadline=2000, derandomize=True)
@given(
    box=st.lists(ANY_FLOAT, min_size=4, max_size=4),
    landmarks=st.lists(st.tuples(ANY_FLOAT, ANY_FLOAT), min_size=5, max_size=5),
    use_box=st.booleans(),
)
def test_any_numbers_only_ever_raise_input_error(box, landmarks, use_box: bool) -> None:
    image = np.zeros((60, 80, 3), np.uint8)
    try:
        crop = normalise_face(image, **({"box": box} if use_box else {"landmarks": landmarks}))
    except InputError:
        return
    assert crop.image.shape == (CROP_SIZE, CROP_SIZE, 3) and np.isfinite(crop.transform.scale)


def test_landmarks_win_over_a_box_but_the_box_is_still_checked() -> None:
    image = np.zeros((300, 400, 3), np.uint8)
    five = _FIVE_POINTS[:, :2] * 8 + (200, 150)
    crop = normalise_face(image, box=(0, 0, 399, 299), landmarks=five)
    assert crop.transform == CropTransform.from_landmarks(five)
    with pytest.raises(InputError) as caught:
        normalise_face(image, box=(5, 5, 1, 1), landmarks=five)
    assert caught.value.field == "face_box"
