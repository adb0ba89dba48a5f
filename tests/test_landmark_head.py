"""The landmark head (VRN-Multitask's idea): its loss, its targets in both data sources, and
the Reconstructor handing its points to the registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facerecon.models import create_model, save_checkpoint
from facerecon.reconstructor import PreparedFace, Reconstructor, registration_landmarks

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared is not available")


def test_landmark_loss_is_least_at_the_target_and_trains_the_maps_onto_it():
    from facerecon.models.vrn import heatmap_points
    from training.losses import landmark_loss

    points = torch.tensor([[[40.0, 60.0], [150.5, 101.2], [-20.0, 10.0]]])  # last: outside
    logits = torch.zeros(1, 3, 48, 48, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.3)
    first = landmark_loss(logits, points).item()
    for _ in range(150):
        loss = landmark_loss(logits, points)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first
    error = (heatmap_points(logits.detach()) - points)[0, :2].norm(dim=-1)
    assert (error < 1.0).all()  # crop pixels
    # the point outside the crop has no say
    assert logits.grad[0, 2].abs().max() == 0


def test_mirror_numbering_swaps_sides_and_keeps_the_midline():
    from facerecon.models.vrn import IBUG68_MIRROR

    assert sorted(IBUG68_MIRROR) == list(range(68))
    assert all(IBUG68_MIRROR[IBUG68_MIRROR[i]] == i for i in range(68))
    pairs = {0: 16, 8: 8, 17: 26, 30: 30, 31: 35, 36: 45, 39: 42, 41: 46, 48: 54, 57: 57, 60: 64}
    assert all(IBUG68_MIRROR[a] == b for a, b in pairs.items())


@needs_shared
def test_engine_points_keep_the_subjects_right_eye_on_the_image_left(tmp_path):
    """Flipped or not, point 36 (the subject's right eye, outer corner) is left of point 45
    on faces turned less than 60 degrees, and points are where the batch's landmarks are."""
    from training.engine.synth import SyntheticFaces

    engine = SyntheticFaces.from_shared(SHARED, tmp_path, photo_limit=8, seed=3)
    batch = engine.batch(0, 16)
    assert batch.points68.shape == (16, 68, 2)
    frontal = batch.yaw.abs() < 60
    assert frontal.sum() >= 4
    assert (batch.points68[frontal, 36, 0] < batch.points68[frontal, 45, 0]).all()
    # the nose tip of the project's map and of the model's own are one vertex apart at most
    assert (batch.points68[:, 30] - batch.landmarks[:, 30, :2]).norm(dim=-1).max() < 6.0


@needs_shared
def test_real_batches_carry_the_annotators_points_through_the_crop():
    from training.engine.facemodel import load_face_model
    from training.engine.geometry import rotation_matrices
    from training.realfit.targets import make_batch, posed_vertices

    model = load_face_model(SHARED / "facemodel")
    rotation = rotation_matrices(torch.tensor([10.0]), torch.zeros(1), torch.zeros(1))
    vertices = posed_vertices(model, torch.zeros(1, 100), torch.zeros(1, 53), rotation,
                              torch.tensor([8.0]), torch.tensor([[130.0, 150.0]]))  # fmt: skip
    annotated = vertices[:, model.annotated68, :2] + 3.0  # an annotator 3 pixels off the fit
    zero = torch.zeros(1)
    batches = [
        make_batch(model, [np.zeros((300, 260, 3), np.uint8)], vertices, torch.tensor([10.0]),
                   zero, zero, torch.Generator().manual_seed(0), flip_probability=flip,
                   points=points)  # fmt: skip
        for flip in (0.0, 1.0) for points in (None, annotated)
    ]  # fmt: skip
    plain, marked, flipped, flipped_marked = (b.points68[0] for b in batches)
    shift = marked - plain  # the annotator's offset, scaled into the crop: same everywhere
    assert torch.allclose(shift, shift[0].expand_as(shift), atol=1e-3) and (shift > 0).all()
    # mirrored: the subject's right eye stays on the image left
    assert flipped[36, 0] < flipped[45, 0] and plain[36, 0] < plain[45, 0]
    assert torch.allclose(flipped_marked - flipped, (shift * torch.tensor([-1.0, 1.0])), atol=1e-3)


@pytest.fixture(scope="module")
def landmark_reconstructor(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny-landmarks.pt"
    torch.manual_seed(0)
    model = create_model("vrn-tiny-landmarks").eval()
    with torch.no_grad():  # a head that says something: random, not zero, weights
        model.landmark_head.weight.normal_(0, 0.5)
    save_checkpoint(path, model, "vrn-tiny-landmarks")
    return Reconstructor(path, device="cpu", detector=None)


def test_predict_gives_each_face_68_points_in_image_pixels(landmark_reconstructor, astronaut):
    face = landmark_reconstructor.prepare(astronaut, face_box=(50, 30, 150, 150))
    (volume,) = landmark_reconstructor.predict([face])
    points = face.predicted_landmarks
    assert points.shape == (68, 2) and np.isfinite(points).all()
    # in image pixels: inside the crop's square on the photo
    t = face.transform
    crop = points * t.scale + [t.tx, t.ty]
    assert (crop >= -0.5).all() and (crop <= 191.5).all()
    assert not np.allclose(points, points[0])


def test_registration_takes_68_given_points_then_the_networks_then_five():
    def face(given, predicted):
        crop = np.zeros((192, 192, 3), np.float32)
        return PreparedFace(np.zeros((8, 8, 3), np.uint8), crop, None, landmarks=given,
                            predicted_landmarks=predicted)  # fmt: skip

    five, sixty_eight, network = np.zeros((5, 2)), np.ones((68, 2)), np.full((68, 2), 2.0)
    assert registration_landmarks(face(sixty_eight, network)) is sixty_eight
    assert registration_landmarks(face(five, network)) is network
    assert registration_landmarks(face(five, None)) is five
    assert registration_landmarks(face(None, None)) is None


def test_the_server_returns_the_networks_landmarks_and_says_it_can(
    landmark_reconstructor, tiny_weights, astronaut_jpeg
):
    from grpc_harness import RunningServer

    from facerecon.v1 import service_pb2 as pb
    from facerecon.v1 import service_pb2_grpc
    from facerecon_client import build_request

    plain = Reconstructor(tiny_weights, device="cpu")
    for reconstructor, has_head in ((landmark_reconstructor, True), (plain, False)):
        with RunningServer(reconstructor) as server, server.channel() as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            assert ("predicted_landmarks_68" in info.features) == has_head
            reply = stub.Reconstruct(build_request(astronaut_jpeg), timeout=60)
            assert len(reply.landmarks68.xy) == (136 if has_head else 0)
            if has_head:
                xy = np.asarray(reply.landmarks68.xy).reshape(68, 2)
                assert (xy >= -50).all() and (xy <= 250).all()  # about the 200-pixel photo


def test_the_pose_is_the_landmarks_pose(landmark_reconstructor, astronaut):
    from facerecon.pose import pose_from_landmarks
    from facerecon.reconstructor import POSE_ONLY

    rec = landmark_reconstructor
    face = rec.prepare(astronaut, face_box=(50, 30, 150, 150))
    (volume,) = rec.predict([face])
    result = rec.finish(face, volume, POSE_ONLY)
    assert result.pose == pose_from_landmarks(face.predicted_landmarks)
    # without the head's points the volume's pose is the answer
    assert rec.head_pose(volume, result.mesh) != result.pose


def test_mirror_averaging_answers_a_mirrored_crop_with_the_mirrored_answer(
    landmark_reconstructor, astronaut
):
    """With test-time flipping the answer is exactly mirror-symmetric, which a random
    network's own answer is not."""
    from facerecon.models.vrn import IBUG68_MIRROR

    crop = landmark_reconstructor.prepare(astronaut, face_box=(50, 30, 150, 150)).crop
    crops = np.stack([crop, np.ascontiguousarray(crop[:, ::-1])])

    def mirror_gap(logits, points):
        mirrored = points[0, IBUG68_MIRROR].copy()
        mirrored[:, 0] = 191 - mirrored[:, 0]
        return np.abs(logits[1] - logits[0, :, :, ::-1]).max(), np.abs(points[1] - mirrored).max()

    volume_gap, point_gap = mirror_gap(*landmark_reconstructor._forward(crops))
    assert volume_gap < 1e-3 and point_gap < 1e-3
    landmark_reconstructor.mirror_average = False
    try:
        volume_gap, point_gap = mirror_gap(*landmark_reconstructor._forward(crops))
    finally:
        landmark_reconstructor.mirror_average = True
    assert volume_gap > 1e-2 and point_gap > 0.1
