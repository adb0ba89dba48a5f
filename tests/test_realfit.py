"""The landmark fitter of training.realfit: correspondences, recovery of known synthetic
heads (pose and shape, profiles included), multi-view against single-view, and the real
training batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facerecon.pose import pose_from_rotation
from training.engine.geometry import rotation_matrices

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared is not available")


def test_hidden_side_pulls_only_what_lies_beyond_the_outline():
    from training.realfit.fitter import HiddenSide

    # a face looking to the image's right: its outline (nose, lips) is a vertical line at
    # x = 1.0 from y = 0 to 1, the rest of its points at x = 0
    points = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 0.5], [0.0, 0.2]]])
    hidden = HiddenSide(torch.zeros(1, 3).long(), torch.tensor([[1, 0]]), torch.tensor([True]))
    far = torch.tensor([[[1.3, 0.5], [0.8, 0.5], [1.02, 1.5]]])  # beyond, behind, within margin
    target, mask = hidden.targets(points, far, margin=0.05)
    assert mask.tolist() == [[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]
    assert torch.allclose(target[0, 0], torch.tensor([1.05, 0.5]))  # onto the line + margin
    assert torch.equal(target[0, 1:], far[0, 1:])
    # mirrored photo: looking left, the same point beyond is now behind
    flipped = points * torch.tensor([-1.0, 1.0])
    _, mask = hidden.targets(flipped, far * torch.tensor([-1.0, 1.0]), margin=0.05)
    assert mask[0, 0, 0] == 1 and mask[0, 1, 0] == 0
    # a photo without an outline (a frontal) is never pulled
    off = HiddenSide(hidden.vertex, hidden.outline, torch.tensor([False]))
    assert off.targets(points, far, margin=0.05)[1].sum() == 0


@pytest.fixture(scope="module")
def fitter():
    if not SHARED.is_dir():
        pytest.skip("../shared is not available")
    from training.engine.facemodel import load_face_model
    from training.realfit.correspondence import Correspondences
    from training.realfit.fitter import LandmarkFitter

    model = load_face_model(SHARED / "facemodel")
    return LandmarkFitter(model, Correspondences(model))


def synthetic_points(fitter, scheme, side, identity, yaw, pitch=0.0, roll=0.0):
    """Landmarks of a known head: fixed points projected, contour points at the silhouette
    candidate nearest their mean-face vertex (landmark marching under the true pose)."""
    vertex, patch = fitter.corr.table(scheme, side)
    rotation = rotation_matrices(torch.tensor([yaw]), torch.tensor([pitch]), torch.tensor([roll]))
    scale, translation = torch.tensor([10.0]), torch.tensor([[100.0, 120.0]])
    expression = torch.zeros(1, fitter.expression_basis.shape[0])
    pos = fitter.shape_at(vertex[None], identity[None], expression)
    cam = pos @ rotation.transpose(1, 2)
    xy = torch.stack([cam[..., 0] * 10, -cam[..., 1] * 10], -1) + translation[:, None]
    marched = fitter._reselect(vertex[None], patch[None], xy, rotation, scale, translation,
                               identity[None], expression)  # fmt: skip
    pos = fitter.shape_at(marched, identity[None], expression)
    cam = pos @ rotation.transpose(1, 2)
    return torch.stack([cam[..., 0] * 10, -cam[..., 1] * 10], -1)[0] + translation


def shape_error(fitter, a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean 3D distance between the 68 landmark points of identities a and b (neutral
    expression, centred, a's scaled to fit b: weak perspective cannot tell size from
    distance), over the interocular distance: the part of the shape that landmarks can pin
    down, depth included."""
    points = fitter.corr.landmarks68[None]
    zero = torch.zeros(1, fitter.expression_basis.shape[0])
    va, vb = fitter.shape_at(points, a[None], zero), fitter.shape_at(points, b[None], zero)
    va, vb = va - va.mean(1, keepdim=True), vb - vb.mean(1, keepdim=True)
    va = va * (va * vb).sum() / (va * va).sum()  # size is the camera's to explain, not the shape's
    lm = fitter.model.neutral[fitter.model.landmarks68]
    return ((va - vb).norm(dim=-1).mean() / (lm[36] - lm[45]).norm()).item()


def test_schemes_name_valid_points(fitter):
    from training.realfit.correspondence import SCHEMES

    assert len(SCHEMES["ibug68"].ibug) == 68
    for name in ("cfp_frontal", "cfp_profile"):
        scheme = SCHEMES[name]
        assert len(scheme.ibug) == 30 and len(set(scheme.ibug)) == 30
        assert scheme.contour <= set(range(30))
    vertex, patch = fitter.corr.table("cfp_profile", "left")
    rows = fitter.corr.patch_vertices[patch[patch >= 0]]
    assert (rows == vertex[patch >= 0][:, None]).any(1).all()  # each patch holds its centre
    # the left half is the mirror image of the right
    right, _ = fitter.corr.table("cfp_frontal", "right")
    mirrored = fitter.model.neutral[vertex[12]] * torch.tensor([-1.0, 1, 1])
    assert (mirrored - fitter.model.neutral[right[12]]).norm() < 0.3


@pytest.mark.parametrize(("scheme", "side", "yaw"), [
    ("ibug68", "right", 0.0), ("ibug68", "right", -40.0),
    ("cfp_frontal", "right", 10.0), ("cfp_profile", "right", 75.0),
    ("cfp_profile", "left", -65.0),
])  # fmt: skip
def test_fit_recovers_a_known_head(fitter, scheme, side, yaw):
    from training.realfit.annotations import Photo
    from training.realfit.build import starts_for
    from training.realfit.fitter import FitInput

    g = torch.Generator().manual_seed(int(yaw) + 100)
    identity = 0.8 * torch.randn(fitter.identity_basis.shape[0], generator=g)
    points = synthetic_points(fitter, scheme, side, identity, yaw, pitch=8.0, roll=-5.0)
    photo = Photo("", points.numpy(), scheme, "test", 1, False)
    fit = fitter.fit(FitInput(points[None], [scheme], torch.tensor([0]), [starts_for(photo)]))
    pose = pose_from_rotation(fit.rotation[0].numpy())
    # one photo's landmarks leave pitch and depth partly ambiguous (the shape prior trades
    # with pitch): yaw and roll within 3 degrees, pitch within 6
    assert abs(pose.yaw - yaw) < 3.0 and abs(pose.roll + 5.0) < 3.0 and abs(pose.pitch - 8) < 6
    assert fit.side == [side]
    assert fit.residual.mean() < 2.0  # pixels, the face about 150 px wide
    mean_face = shape_error(fitter, torch.zeros_like(identity), identity)
    assert shape_error(fitter, fit.identity[0], identity) < 0.95 * mean_face


def test_multiview_identity_beats_single_views(fitter):
    from training.realfit.fitter import FitInput

    errors_single, errors_multi = [], []
    for person in range(3):
        g = torch.Generator().manual_seed(person)
        identity = torch.randn(fitter.identity_basis.shape[0], generator=g)
        views = [("cfp_frontal", "right", y) for y in (-15.0, -5.0, 0.0, 5.0, 15.0)]
        views += [("cfp_profile", "right", 70.0), ("cfp_profile", "left", -80.0)]
        points = torch.stack([synthetic_points(fitter, s, d, identity, y) for s, d, y in views])
        starts = [[(d, y)] for _, d, y in views]
        schemes = [s for s, _, _ in views]
        multi = fitter.fit(FitInput(points, schemes, torch.zeros(len(views)).long(), starts))
        single = fitter.fit(FitInput(points, schemes, torch.arange(len(views)), starts))
        errors_multi.append(shape_error(fitter, multi.identity[0], identity))
        for (_, _, yaw), rotation in zip(views, multi.rotation, strict=True):
            pose = pose_from_rotation(rotation.numpy())
            # CFP frontals show one half of the face: their pose is the least pinned down
            tolerance = 4.0 if abs(yaw) >= 60 else 6.0
            assert max(abs(pose.yaw - yaw), abs(pose.pitch), abs(pose.roll)) < tolerance
        errors_single.append(np.mean([shape_error(fitter, w, identity) for w in single.identity]))
    assert np.mean(errors_multi) < 0.85 * np.mean(errors_single)


@needs_shared
def test_real_batches_have_the_engine_form(tmp_path):
    """A real photo with a fit becomes an engine Batch whose target covers the face."""
    from training.engine.facemodel import load_face_model
    from training.realfit.targets import make_batch, posed_vertices

    model = load_face_model(SHARED / "facemodel")
    image = np.zeros((300, 260, 3), np.uint8)
    rotation = rotation_matrices(torch.tensor([30.0]), torch.zeros(1), torch.zeros(1))
    vertices = posed_vertices(model, torch.zeros(1, 100), torch.zeros(1, 53), rotation,
                              torch.tensor([8.0]), torch.tensor([[130.0, 150.0]]))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    zero = torch.zeros(1)
    batch = make_batch(model, [image], vertices, torch.tensor([30.0]), zero, zero, g,
                       flip_probability=0.0)  # fmt: skip
    assert batch.image.shape == (1, 3, 192, 192) and batch.front.shape == (1, 192, 192)
    lm = batch.landmarks[0]
    nose = lm[30].round().long()
    assert batch.mask[0, nose[1], nose[0]]  # the head covers its own nose tip
    assert (batch.front[0][batch.mask[0]] >= batch.back[0][batch.mask[0]]).all()
    assert batch.mask[0].float().mean() > 0.3  # the head fills most of the tight crop


@needs_shared
def test_face_profiling_turns_the_head_and_keeps_the_photo():
    """Turned by 0 the photo comes back inside the head; turned by 50 degrees the fit's pose
    says so and its landmarks stay on the turned head."""
    from training.engine.facemodel import load_face_model
    from training.realfit.correspondence import mirror_vertices
    from training.realfit.profiling import profile_photo, turn
    from training.realfit.targets import posed_vertices

    model = load_face_model(SHARED / "facemodel")
    rng = np.random.default_rng(0)
    photo = cv2_blur(rng.integers(0, 255, (200, 180, 3), dtype=np.uint8))
    rotation = rotation_matrices(torch.tensor([5.0]), torch.zeros(1), torch.zeros(1))
    scale, translation = torch.tensor([6.0]), torch.tensor([[90.0, 95.0]])
    identity, expression = torch.zeros(1, 100), torch.zeros(1, 53)
    vertices = posed_vertices(model, identity, expression, rotation, scale, translation)[0]
    mirror = mirror_vertices(model.neutral)
    same, _, _ = turn(vertices, rotation[0], translation[0], 0.0)
    redrawn = profile_photo(model, photo, vertices, same, mirror)
    face = (slice(70, 120), slice(65, 115))  # around the nose, inside the head
    assert np.abs(redrawn[face].astype(int) - photo[face].astype(int)).mean() < 12

    turned, new_rotation, new_translation = turn(vertices, rotation[0], translation[0], 50.0)
    assert abs(pose_from_rotation(new_rotation.numpy()).yaw - 55.0) < 1e-3
    refit = posed_vertices(model, identity, expression, new_rotation[None], scale,
                           new_translation[None])[0]  # fmt: skip
    assert (refit[:, :2] - turned[:, :2]).abs().max() < 1e-3
    assert profile_photo(model, photo, vertices, turned, mirror).shape == photo.shape


def cv2_blur(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (9, 9), 3)
