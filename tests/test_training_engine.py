"""The synthetic data engine: shapes, determinism, volume/silhouette agreement, yaw balance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared is not available")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from training.engine.synth import SyntheticFaces

    cache = tmp_path_factory.mktemp("cache")
    return SyntheticFaces.from_shared(SHARED, cache, photo_limit=24, seed=7)


@pytest.fixture(scope="module")
def batch(engine):
    return engine.batch(0, 4)


def test_batch_shapes_and_types(batch):
    assert batch.image.shape == (4, 3, 192, 192) and batch.image.dtype == torch.float32
    assert 0.0 <= batch.image.min() and batch.image.max() <= 1.0
    assert batch.front.shape == batch.back.shape == (4, 192, 192)
    assert batch.landmarks.shape == (4, 68, 3)
    assert batch.face_vertices.shape[0] == 4 and batch.face_vertices.shape[2] == 3
    assert batch.mask.float().mean() > 0.2  # a head fills much of the crop


def test_same_seed_and_index_give_the_same_batch(engine, batch):
    again = engine.batch(0, 4)
    # Equal up to float summation order (threaded reductions); geometry is exact.
    assert (again.image - batch.image).abs().mean() < 1e-4
    assert torch.equal(again.front, batch.front) and torch.equal(again.back, batch.back)
    other = engine.batch(1, 4)
    assert not torch.equal(other.image, batch.image)


def test_a_pose_sweep_changes_only_the_pose(engine):
    first, same, turned = engine.pose_sweep(7, [20.0, 20.0, 50.0])
    assert (first.image - same.image).abs().max() < 1e-4  # same person, texture, light
    assert abs(abs(float(turned.yaw[0])) - 50.0) < 1e-4
    assert float(turned.yaw[0]) * float(first.yaw[0]) > 0  # flipped together, or neither
    assert (first.image - turned.image).abs().mean() > 0.02
    other = engine.pose_sweep(8, [20.0])[0]
    assert (first.image - other.image).abs().mean() > 0.02  # another person


def test_volume_columns_match_the_rendered_silhouette(batch):
    from training.engine.voxelize import SLICES, fill_volume, pooled_volume

    volume = fill_volume(batch.front, batch.back)
    assert volume.shape == (4, SLICES, 192, 192) and volume.dtype == torch.bool
    columns = volume.any(1)
    silhouette = batch.mask
    iou = (columns & silhouette).sum() / (columns | silhouette).sum()
    assert iou > 0.9
    # The nearest surface is inside the volume, and pooling keeps the occupancy.
    assert batch.front[silhouette].max() < SLICES // 2
    pooled = pooled_volume(batch.front, batch.back)
    assert pooled.shape == (4, SLICES, 48, 48)
    reference = torch.nn.functional.avg_pool2d(volume.float(), 4)
    assert torch.allclose(pooled, reference, atol=1e-6)


def test_landmarks_lie_on_the_face_box_framing(batch):
    from training.engine.synth import EngineConfig

    config = EngineConfig()
    side = (batch.landmarks[..., :2].amax(1) - batch.landmarks[..., :2].amin(1)).amax(-1)
    implied = 192 / side / config.side_over_face  # = 1 / scale jitter
    low, high = config.scale_jitter
    assert ((implied > 1 / high - 1e-3) & (implied < 1 / low + 1e-3)).all()


def test_visible_nose_tip_is_on_the_front_surface(engine):
    """The nose tip of a near-frontal face is where the front depth map says."""
    from training.engine.synth import SyntheticFaces

    frontal = SyntheticFaces(
        engine.model, engine.photos, engine.config, seed=3, yaw_buckets=[(0.0, 10.0)]
    ).batch(0, 2)
    for i in range(2):
        if abs(frontal.pitch[i]) > 25:
            continue
        x, y, z = frontal.landmarks[i, 30]
        front = frontal.front[i, int(y.round()), int(x.round())]
        assert abs(front - z) < 3.0


def test_yaw_is_spread_over_the_whole_range():
    from training.engine.sampling import PosePrior, sample_poses

    g = torch.Generator().manual_seed(0)
    yaw = sample_poses(g, 6000, PosePrior(), None)["yaw"]
    assert yaw.abs().max() <= 90 and (yaw > 0).float().mean().sub(0.5).abs() < 0.03
    counts = torch.histc(yaw.abs(), bins=3, min=0, max=90)
    assert counts.min() / counts.max() > 0.7  # no bucket starved; large yaw oversampled
    assert counts[2] >= counts[0]
    buckets = [(0.0, 30.0), (30.0, 60.0), (60.0, 90.0)]
    balanced = sample_poses(g, 300, PosePrior(), buckets)["yaw"].abs()
    assert torch.histc(balanced, bins=3, min=0, max=90).tolist() == [100, 100, 100]
    # drawn in batches of 4 (not a multiple of 3), the whole set is still balanced
    batched = torch.cat([
        sample_poses(g, 4, PosePrior(), buckets, first=4 * i)["yaw"].abs() for i in range(75)
    ])  # fmt: skip
    assert torch.histc(batched, bins=3, min=0, max=90).tolist() == [100, 100, 100]


def test_rotation_follows_the_pose_convention():
    from training.engine.geometry import rotation_matrices

    def forward(yaw, pitch, roll):
        r = rotation_matrices(torch.tensor([yaw]), torch.tensor([pitch]), torch.tensor([roll]))
        return r[0]

    z = torch.tensor([0.0, 0.0, 1.0])
    assert torch.allclose(forward(90, 0, 0) @ z, torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(forward(0, 90, 0) @ z, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    x = torch.tensor([1.0, 0.0, 0.0])
    assert torch.allclose(forward(0, 0, 90) @ x, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_rasterizer_covers_a_square_without_holes():
    from training.engine.raster import rasterize

    square = torch.tensor([[[10.0, 10.0, 5.0], [50.0, 10.0, 5.0], [50.0, 50.0, 5.0],
                            [10.0, 50.0, 5.0]]])  # fmt: skip
    raster = rasterize(square, torch.tensor([[0, 1, 2], [0, 2, 3]]), 64)
    assert raster.mask[0, 11:50, 11:50].all()
    assert not raster.mask[0, :9].any() and not raster.mask[0, :, 52:].any()
    assert torch.allclose(raster.front[0, 11:50, 11:50], torch.tensor(5.0))


def test_reported_yaw_matches_where_the_nose_points(engine):
    """yaw > 0 turns the face to the image's right, also after a horizontal flip."""
    from training.engine.synth import SyntheticFaces

    turned = SyntheticFaces(
        engine.model, engine.photos, engine.config, seed=5, yaw_buckets=[(30.0, 90.0)]
    ).batch(0, 4)
    lm = turned.landmarks
    nose_offset = lm[:, 30, 0] - lm[:, [0, 16], 0].mean(1)  # nose tip vs jaw ends
    assert (torch.sign(nose_offset) == torch.sign(turned.yaw)).all()
