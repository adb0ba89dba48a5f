"""train.py and evaluate.py end to end on vrn-tiny: a few steps, a loadable checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared is not available")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from training.train import load_config, train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    config = load_config(
        REPO / "training/configs/vrn-light-cpu.yaml",
        ["variant=vrn-tiny", "batch_size=2", "steps=2", "log_every=1", "warmup_steps=1",
         f"run_dir={run}", "photo_limit=16", "threads=1"],
    )  # fmt: skip
    train(config)
    return run


def test_training_writes_a_log_and_a_loadable_checkpoint(run_dir):
    from facerecon.models import load_checkpoint

    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(0 < r["loss"] < 2 and 0 <= r["iou"] <= 1 for r in records)
    model, info = load_checkpoint(run_dir / "model.pt")
    assert info["variant"] == "vrn-tiny"
    assert info["meta"]["steps"] == 2 and info["meta"]["samples_seen"] == 4
    assert info["meta"]["seed"] == 1 and "engine" in info["meta"]
    with torch.no_grad():
        assert model(torch.rand(1, 3, 192, 192)).shape == (1, 200, 192, 192)


def test_training_resumes_from_its_state(run_dir):
    from training.train import load_config, train

    config = load_config(
        REPO / "training/configs/vrn-light-cpu.yaml",
        ["variant=vrn-tiny", "batch_size=2", "steps=3", "log_every=1", "warmup_steps=1",
         f"run_dir={run_dir}", "photo_limit=16", "threads=1"],
    )  # fmt: skip
    train(config)
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_fine_tuning_starts_from_a_checkpoint_and_records_it(run_dir, tmp_path):
    from facerecon.models import load_checkpoint
    from training.train import load_config, train

    config = load_config(
        REPO / "training/configs/vrn-light-cpu-finetune.yaml",
        ["variant=vrn-tiny", "batch_size=2", "steps=1", "warmup_steps=1", "lr=0.0",
         f"run_dir={tmp_path / 'tuned'}", "photo_limit=16", "threads=1",
         f"init_weights={run_dir / 'model.pt'}"],
    )  # fmt: skip
    tuned = train(config)
    start, start_info = load_checkpoint(run_dir / "model.pt")
    model, info = load_checkpoint(tuned / "model.pt")
    assert info["meta"]["start_from"]["sha256"] == start_info["sha256"]
    assert info["meta"]["start_from"]["steps"] == start_info["meta"]["steps"]
    # lr 0: the weights are the starting checkpoint's (BN statistics move in train mode)
    weights = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    weights = {k: v for k, v in weights.items() if "running" not in k}
    for name, value in weights.items():
        torch.testing.assert_close(value, start.state_dict()[name], atol=2e-3, rtol=1e-2)

    wrong = dict(config, variant="vrn-light", run_dir=str(tmp_path / "wrong"))
    with pytest.raises(ValueError, match="vrn-tiny"):
        train(wrong)


def test_two_cpu_processes_train_on_a_batch_cache(tmp_path):
    """The CPU's fastest loop: `training.batch_cache` writes the batches, `torchrun` runs two
    DDP processes of one thread that read them (each its half of every step's batches)."""
    import subprocess
    import sys

    from facerecon.models import load_checkpoint

    common = ["variant=vrn-tiny", "batch_size=2", "photo_limit=16"]
    config = ["--config", str(REPO / "training/configs/vrn-light-cpu.yaml")]
    cache, run = tmp_path / "batches", tmp_path / "run"
    subprocess.run([sys.executable, "-m", "training.batch_cache", *config, "--out", str(cache),
                    "--steps", "3", "--set", *common], check=True, cwd=REPO)  # fmt: skip
    assert len(list(cache.glob("*.pt"))) == 3
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "-m", "training.train", *config, "--set", *common, "steps=2", "log_every=1",
         "warmup_steps=1", "threads=1", f"run_dir={run}", f"batch_cache={cache}"],
        check=True, cwd=REPO,
    )  # fmt: skip
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in records] == [4, 8]  # two processes of 2 a step
    meta = load_checkpoint(run / "model.pt")[1]["meta"]
    assert meta["hardware"].endswith("2 processes of 1 threads")
    assert meta["train_config"]["batch_cache"] == str(cache)


def test_evaluate_reports_iou_and_nme_per_yaw_bucket(run_dir, tmp_path):
    from training.evaluate import evaluate

    result = evaluate(run_dir / "model.pt", SHARED, tmp_path, count=3, batch_size=3)
    assert result["overall"]["count"] == 3
    assert set(result["yaw_buckets"]) == {"[0,30)", "[30,60)", "[60,90]"}
    assert all(b["count"] == 1 for b in result["yaw_buckets"].values())
    assert 0 <= result["overall"]["iou"] <= 1
    assert result["overall"]["nme"] > 0 and result["overall"]["nme_service_mesh"] > 0


def test_nme_is_zero_for_a_perfect_surface_and_grows_with_error():
    import numpy as np

    from facerecon.mesh import volume_to_mesh
    from training.evaluate import nme

    z, y, x = np.mgrid[0:200, 0:64, 0:64]
    sphere = ((x - 32) ** 2 + (y - 32) ** 2 + (z - 100) ** 2 <= 20**2).astype(np.float32)
    mesh = volume_to_mesh(sphere, step=1, smooth_iterations=0)
    directions = np.random.default_rng(0).normal(size=(500, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    on_surface = directions * 20 + [32, 32, 0]
    assert nme(mesh, on_surface, interocular=40.0) < 0.02
    bigger = directions * 26 + [32, 32, 0]
    assert nme(mesh, bigger, interocular=40.0) > 0.1


def test_surface_distance_is_exact():
    """Distances to the surface are to its triangles, not to its vertices: they match a
    brute-force search over every triangle."""
    import numpy as np
    import trimesh

    from facerecon.mesh import Mesh
    from training.evaluate import surface_distance

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(100, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = directions * rng.uniform(17.0, 23.0, (100, 1))
    found = surface_distance(Mesh(sphere.vertices, sphere.faces), points)
    triangles = np.tile(sphere.triangles, (len(points), 1, 1))
    repeated = np.repeat(points, len(sphere.faces), axis=0)
    nearest = trimesh.triangles.closest_point(triangles, repeated)
    brute = np.linalg.norm(nearest - repeated, axis=1).reshape(len(points), -1).min(1)
    np.testing.assert_allclose(found, brute, atol=1e-5)
    vertices_only = np.linalg.norm(points[:, None] - sphere.vertices[None], axis=-1).min(1)
    assert (found < vertices_only - 1e-3).mean() > 0.9  # vertices alone overestimate


def test_export_adds_a_version_and_stays_loadable(run_dir, tmp_path):
    from facerecon.models import load_checkpoint
    from training.export import export

    out = tmp_path / "weights" / "facerecon.pt"
    digest = export(run_dir / "model.pt", out, "tiny-test")
    _, info = load_checkpoint(out)
    assert info["sha256"] == digest
    assert info["meta"]["version"] == "tiny-test" and "UTKFace" in info["meta"]["licences"]
    assert info["meta"]["steps"] >= 2


def test_fine_tuning_adds_a_landmark_head_to_a_network_without_one(run_dir, tmp_path):
    import json

    from facerecon.models import load_checkpoint
    from training.train import load_config, train

    config = load_config(
        REPO / "training/configs/vrn-light-cpu-finetune.yaml",
        ["variant=vrn-tiny-landmarks", "batch_size=2", "steps=2", "warmup_steps=1",
         "log_every=1", f"run_dir={tmp_path / 'landmarks'}", "photo_limit=16", "threads=1",
         f"init_weights={run_dir / 'model.pt'}"],
    )  # fmt: skip
    tuned = train(config)
    model, info = load_checkpoint(tuned / "model.pt")
    assert info["variant"] == "vrn-tiny-landmarks" and model.landmark_head is not None
    records = [json.loads(line) for line in (tuned / "log.jsonl").read_text().splitlines()]
    assert all(r["landmark_px"] > 0 and r["landmark_loss"] > 0 for r in records)
