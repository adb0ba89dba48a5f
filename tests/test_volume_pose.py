"""The learned head-pose network: shapes, checkpoints, the 6D rotation, the Reconstructor's use
of it, and (with the shipped weights and ../shared) its accuracy on engine volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facerecon.models import (
    VolumePose,
    count_parameters,
    create_model,
    load_checkpoint,
    save_checkpoint,
)
from facerecon.models.volume_pose import (
    estimate_volume_pose,
    pool_volume,
    rotation_from_6d,
    rotation_to_6d,
)
from facerecon.pose import Pose, pose_from_rotation, rotation_matrix
from facerecon.reconstructor import ReconstructOptions, Reconstructor, WeightsNotFound

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "pose.pt"


def test_output_shape_and_size():
    model = create_model("volume-pose").eval()
    assert isinstance(model, VolumePose)
    assert 1e5 < count_parameters(model) < 5e5
    with torch.no_grad():
        rotation = model.rotation(torch.rand(2, 200, 48, 48))
    assert rotation.shape == (2, 3, 3)
    identity = torch.eye(3).expand(2, 3, 3)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), identity, atol=1e-5, rtol=0)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(2), atol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    model = create_model("volume-pose").eval()
    save_checkpoint(tmp_path / "pose.pt", model, "volume-pose", meta={"steps": 1})
    loaded, info = load_checkpoint(tmp_path / "pose.pt")
    assert isinstance(loaded, VolumePose) and info["architecture"] == "volume-pose"
    assert info["variant"] == "volume-pose" and info["meta"] == {"steps": 1}
    x = torch.rand(1, 200, 48, 48)
    with torch.no_grad():  # fp16 weights: close, not equal
        torch.testing.assert_close(loaded(x), model(x), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (35, -20, 10), (-80, 15, -25)])
def test_known_rotation_survives_6d_and_pose_conversion(yaw, pitch, roll):
    matrix = torch.tensor(rotation_matrix(yaw, pitch, roll), dtype=torch.float64)[None]
    six = rotation_to_6d(matrix)
    np.testing.assert_allclose(
        six[0, :3], matrix[0] @ torch.tensor([0.0, 0, 1], dtype=torch.float64)
    )
    back = rotation_from_6d(six * 3.0)  # the network's output need not be unit length
    pose = pose_from_rotation(back[0].numpy())
    np.testing.assert_allclose([pose.yaw, pose.pitch, pose.roll], [yaw, pitch, roll], atol=1e-6)


def test_pooling_matches_the_48_resolution():
    volume = torch.rand(1, 200, 192, 192)
    pooled = pool_volume(volume)
    assert pooled.shape == (1, 200, 48, 48)
    torch.testing.assert_close(pooled[0, 7, 3, 5], volume[0, 7, 12:16, 20:24].mean())
    model = create_model("volume-pose").eval()
    full = estimate_volume_pose(model, volume[0].numpy())
    assert full == estimate_volume_pose(model, pooled[0])


@pytest.fixture()
def weights_dir(tmp_path, tiny_weights) -> Path:
    (tmp_path / "facerecon.pt").write_bytes(tiny_weights.read_bytes())
    return tmp_path


def test_reconstructor_uses_pose_weights_beside_its_weights(weights_dir, astronaut, monkeypatch):
    monkeypatch.delenv("FACERECON_POSE_WEIGHTS", raising=False)
    torch.manual_seed(0)
    model = create_model("volume-pose").eval()
    save_checkpoint(weights_dir / "pose.pt", model, "volume-pose")
    reconstructor = Reconstructor(weights_dir / "facerecon.pt", device="cpu")
    assert isinstance(reconstructor.pose_model, VolumePose)
    face = reconstructor.prepare(astronaut)
    (volume,) = reconstructor.predict([face])
    result = reconstructor.finish(face, volume, ReconstructOptions(frontal=False, pose=True))
    loaded, _ = load_checkpoint(weights_dir / "pose.pt")
    expected = estimate_volume_pose(loaded, volume)
    np.testing.assert_allclose(
        [result.pose.yaw, result.pose.pitch, result.pose.roll],
        [expected.yaw, expected.pitch, expected.roll],
        atol=0.5,  # batch-norm folded at load: tiny float differences
    )


def test_reconstructor_falls_back_without_pose_weights(weights_dir, monkeypatch):
    monkeypatch.delenv("FACERECON_POSE_WEIGHTS", raising=False)
    assert Reconstructor(weights_dir / "facerecon.pt", device="cpu").pose_model is None


def test_explicit_pose_weights_must_exist(weights_dir, monkeypatch):
    monkeypatch.setenv("FACERECON_POSE_WEIGHTS", str(weights_dir / "absent.pt"))
    with pytest.raises(WeightsNotFound, match="head-pose weights"):
        Reconstructor(weights_dir / "facerecon.pt", device="cpu")
    monkeypatch.delenv("FACERECON_POSE_WEIGHTS")
    with pytest.raises(WeightsNotFound, match="not head-pose weights"):  # a VRN is not one
        Reconstructor(weights_dir / "facerecon.pt", device="cpu",
                      pose_weights=weights_dir / "facerecon.pt")  # fmt: skip


@pytest.mark.skipif(not SHIPPED.is_file(), reason="weights/pose.pt is not present")
def test_shipped_weights_read_engine_volumes_within_12_degrees(shared):
    from training.engine.synth import EngineConfig
    from training.engine.voxelize import pooled_volume
    from training.evaluate import EVAL_SEED, YAW_BUCKETS
    from training.pose_data import GeometryOnlyFaces

    engine = GeometryOnlyFaces.from_shared_model(shared, EngineConfig(), EVAL_SEED)
    engine.yaw_buckets = YAW_BUCKETS
    batch = engine.batch(0, 9)
    pooled = pooled_volume(batch.front, batch.back)
    model, _ = load_checkpoint(SHIPPED)
    errors = []
    for i in range(len(pooled)):
        truth = Pose(float(batch.yaw[i]), float(batch.pitch[i]), float(batch.roll[i])).matrix()
        estimate = estimate_volume_pose(model, pooled[i]).matrix()
        cos = (np.trace(estimate.T @ truth) - 1) / 2
        errors.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    assert np.mean(errors) < 12.0, errors
