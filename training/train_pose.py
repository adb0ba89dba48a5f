"""Train the head-pose network on engine volumes: `python -m training.train_pose --config
training/configs/volume-pose.yaml`.

1. Draw `heads` engine heads without appearance into `run_dir/faces/` (shards of depth maps
   and rotations; drawn once, reused by reruns).
2. Train on them for `minutes` of wall time (or `steps`), each batch freshly corrupted to
   look like a VRN prediction (`training.pose_data.Augment`). Loss: squared Frobenius
   distance between the predicted and true rotation matrices.
3. Save fp16 weights with `facerecon.models.save_checkpoint` to `run_dir/model.pt`.
"""

from __future__ import annotations

# ruff: noqa: E402  (see training/train.py: OMP must wait passively on the shared CPU)
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from facerecon.models import count_parameters, create_model, save_checkpoint
from facerecon.models.volume_pose import rotation_from_6d
from training.engine.synth import EngineConfig
from training.pose_data import (
    SHARD,
    Augment,
    GeometryOnlyFaces,
    augmented_volumes,
    draw_shard,
    load_shards,
)
from training.train import load_config

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {
    "variant": "volume-pose",
    "heads": 4000,  # distinct engine heads (multiples of SHARD)
    "batch_size": 32,
    "minutes": 12.0,  # wall-time budget of the training phase (the schedule follows it)
    "steps": 100_000,  # or stop after this many steps, whichever comes first
    "lr": 2e-3,
    "min_lr_ratio": 0.02,
    "warmup_steps": 50,
    "weight_decay": 1e-4,
    "seed": 11,  # engine seed of the training heads (evaluation uses EVAL_SEED)
    "threads": 1,
    "log_every": 20,
    "run_dir": "runs/volume-pose",
    "shared": str(REPO.parent / "shared"),
    "engine": {},
    "augment": {},
}


def draw_heads(config: dict, folder: Path) -> dict[str, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    engine = GeometryOnlyFaces.from_shared_model(
        config["shared"], EngineConfig.from_dict(config["engine"]), config["seed"]
    )
    for shard in range(math.ceil(config["heads"] / SHARD)):
        path = folder / f"shard-{shard:04d}.pt"
        if not path.exists():
            torch.save(draw_shard(engine, shard), folder / "shard.tmp")
            os.replace(folder / "shard.tmp", path)
            print(f"drew heads {shard * SHARD}..{(shard + 1) * SHARD - 1}", flush=True)
    return load_shards(folder)


def rotation_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared Frobenius distance: 8 sin^2(angle / 2) for rotations `angle` apart."""
    return (predicted - target).square().sum((1, 2)).mean()


def angle_degrees(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    cos = ((predicted.transpose(1, 2) @ target).diagonal(dim1=1, dim2=2).sum(1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def train(config: dict) -> Path:
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    run_dir = Path(config["run_dir"])
    heads = draw_heads(config, run_dir / "faces")
    heads = {k: v[: config["heads"]] for k, v in heads.items()}
    count = len(heads["rotation"])
    augment = Augment(**config["augment"])
    model = create_model(config["variant"])
    optimizer = torch.optim.AdamW(
        model.parameters(), config["lr"], weight_decay=config["weight_decay"]
    )
    print(f"{config['variant']}: {count_parameters(model):,} parameters, {count} heads",
          flush=True)  # fmt: skip
    g = torch.Generator().manual_seed(config["seed"])
    log = open(run_dir / "log.jsonl", "w")
    budget, started, step, order = 60.0 * config["minutes"], time.time(), 0, torch.empty(0)
    model.train()
    while step < config["steps"]:
        progress = max(step / config["steps"], (time.time() - started) / budget)
        if progress >= 1.0:
            break
        warm = min(1.0, (step + 1) / config["warmup_steps"])
        floor = config["min_lr_ratio"]
        lr = config["lr"] * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        if len(order) < config["batch_size"]:  # a new epoch
            order = torch.randperm(count, generator=g)
        pick, order = order[: config["batch_size"]], order[config["batch_size"] :]
        volume, target = augmented_volumes(
            heads["front"][pick], heads["back"][pick], heads["rotation"][pick], augment, g
        )
        predicted = rotation_from_6d(model(volume))
        loss = rotation_loss(predicted, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % config["log_every"] == 0:
            record = {"step": step, "loss": round(loss.item(), 5), "lr": lr,
                      "angle_deg": round(angle_degrees(predicted, target).mean().item(), 2),
                      "seconds": round(time.time() - started, 1)}  # fmt: skip
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(record, flush=True)
    meta = {
        "data": "facerecon synthetic engine heads (ICT face model shapes), no appearance",
        "engine": asdict(EngineConfig.from_dict(config["engine"])), "augment": asdict(augment),
        "heads": count, "steps": step, "samples_seen": step * config["batch_size"],
        "minutes": round((time.time() - started) / 60, 2), "train_config": config,
        "loss": "squared Frobenius distance of rotation matrices (6D output, Zhou et al. 2019)",
    }  # fmt: skip
    save_checkpoint(run_dir / "model.pt", model.eval(), config["variant"], meta)
    return run_dir / "model.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config entries (value parsed as YAML)")  # fmt: skip
    args = parser.parse_args()
    print(train(load_config(args.config, args.set, DEFAULTS)))


if __name__ == "__main__":
    main()
