"""Train a VRN on the synthetic engine: `python -m training.train --config training/configs/X.yaml`.

Single process on CPU or one GPU, or DDP under `torchrun` (WORLD_SIZE > 1). The run
folder gets `log.jsonl` (one JSON object per logged step), `state.pt` (everything needed
to resume: model, optimiser, step, RNG) and `model.pt` (fp16 weights for the service,
with the config and the data recipe inside), both rewritten every
`checkpoint_minutes`. Rerunning the same command resumes from `state.pt`.
"""

from __future__ import annotations

# ruff: noqa: E402  (OMP_WAIT_POLICY below must be set before torch is imported)
import os

# On a shared CPU, OpenMP threads that spin while waiting for each other lose their cores to
# other processes: measured 5x slower with 2 threads on 2 busy cores. Waiting passively
# costs nothing on an idle machine. (Read when torch loads OpenMP, so set before importing.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import platform
import signal
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from facerecon.models import count_parameters, create_model, load_checkpoint, save_checkpoint
from facerecon.models.vrn import heatmap_points
from training.batch_cache import BatchCache
from training.engine.synth import EngineConfig, SyntheticFaces
from training.losses import StackLogits, landmark_loss, volume_iou, volume_loss, volume_targets
from training.realfit.dataset import MixedFaces, RealFaces

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {
    "variant": "vrn-light",
    "batch_size": 8,  # per process
    "steps": 3000,
    "optimizer": "adamw",  # or "rmsprop" (the paper: lr 1e-4)
    "lr": 2e-4,
    "min_lr_ratio": 0.1,  # cosine decay to lr * this at `steps`
    "warmup_steps": 100,
    "weight_decay": 1e-4,
    "grad_clip": 1.0,
    "loss_resolution": "pooled",  # "pooled" (48 x 48 soft targets) or "full"
    "seed": 0,
    "threads": 0,  # torch CPU threads; 0 keeps torch's default
    "device": "auto",
    "log_every": 10,
    "checkpoint_minutes": 5.0,
    "run_dir": "runs/default",
    "shared": str(REPO.parent / "shared"),
    "photo_limit": None,  # use only the first N training photos (tests)
    "init_weights": None,  # start a new run from this checkpoint's weights (fine-tuning)
    "engine": {},
    "real_cache": None,  # fits.pt of `python -m training.realfit.build`: mix in real photos
    "real_share": 0.0,  # fraction of every batch drawn from the real photos
    "real_subsets": ["cfp", "helen_train", "afw"],  # training splits only (held-out refused)
    "real_profiling": 0.0,  # chance a near-frontal real sample is face-profiled to 45-90 deg
    # a folder of batches made ahead (`python -m training.batch_cache`) to read instead of
    # making them: both CPU cores go to the network
    "batch_cache": None,
    "cpu_bf16": False,  # bf16 autocast on the CPU (AVX-512 BF16: ~2x faster steps)
    "channels_last": False,  # NHWC activations (faster convolutions on the CPU)
    # weight of the landmark head's loss (`landmark_loss`, in heatmap cells) against the
    # volume's cross-entropy; used by variants with a landmark head
    "landmark_weight": 0.02,
    # the landmark head's learning rate over `lr`: a new head on trained features would
    # otherwise take thousands of steps to sharpen its maps (measured: 23.5 -> 22.9 in 50)
    "landmark_lr_scale": 20.0,
}


def load_config(path: str | Path, overrides: list[str], defaults: dict = DEFAULTS) -> dict:
    """`defaults`, updated from a YAML file, then from `key=value` overrides (YAML values)."""
    config = dict(defaults)
    config.update(yaml.safe_load(Path(path).read_text()) or {})
    for item in overrides:  # key=value, value parsed as YAML
        key, _, value = item.partition("=")
        if key not in defaults:
            raise KeyError(f"unknown config key {key!r}")
        config[key] = yaml.safe_load(value)
    return config


def learning_rate(config: dict, step: int) -> float:
    if step < config["warmup_steps"]:
        return config["lr"] * (step + 1) / config["warmup_steps"]
    progress = min(
        1.0, (step - config["warmup_steps"]) / max(1, config["steps"] - config["warmup_steps"])
    )
    floor = config["min_lr_ratio"]
    return config["lr"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(config: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Every parameter at `lr`, the landmark head's at `lr` x `landmark_lr_scale` (each
    group's `lr_scale`, which `learning_rate`'s schedule is multiplied by)."""
    head = [] if model.landmark_head is None else list(model.landmark_head.parameters())
    rest = [p for p in model.parameters() if all(p is not q for q in head)]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if head:
        groups.append({"params": head, "lr_scale": config["landmark_lr_scale"]})
    if config["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, config["lr"], weight_decay=config["weight_decay"])
    if config["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(groups, config["lr"])
    raise ValueError(f"unknown optimizer {config['optimizer']!r}")


def init_output_bias(model: torch.nn.Module, engine: SyntheticFaces, config: dict) -> None:
    """Start the output layers at the mean occupancy's logit: skips a slow first phase."""
    batch = engine.batch(-1, config["batch_size"])  # a batch training never draws
    occupancy = volume_targets(batch.front, batch.back, "pooled").mean().clamp(0.01, 0.99)
    with torch.no_grad():
        for head in model.heads:
            head.bias.fill_(torch.logit(occupancy).item())


def start_from_checkpoint(model: torch.nn.Module, config: dict) -> dict:
    """Load `init_weights` into `model`; returns what the run's checkpoints record of it."""
    source, info = load_checkpoint(config["init_weights"])
    if source.config.to_dict() != {**model.config.to_dict(), "landmarks": source.config.landmarks}:
        raise ValueError(
            f"init_weights is a {info['variant']!r}, the config a {config['variant']!r}"
        )
    # a network without a landmark head may start one that has it: the head starts fresh
    missing, _ = model.load_state_dict(source.state_dict(), strict=False)
    if any(not name.startswith("landmark_head.") for name in missing):
        raise ValueError(f"init_weights lacks {missing}")
    meta = info["meta"]
    return {"sha256": info["sha256"], "steps": meta.get("steps"),
            "samples_seen": meta.get("samples_seen"), "hours": meta.get("hours"),
            "start_from": meta.get("start_from")}  # fmt: skip


def training_data(
    config: dict, cache_dir: Path, device: torch.device
) -> tuple[SyntheticFaces, SyntheticFaces | MixedFaces]:
    """The synthetic engine, and what batches are drawn from: it, or it mixed with the real
    photos (`real_share` of each batch), or the `batch_cache` written from those."""
    engine = SyntheticFaces.from_shared(
        config["shared"], cache_dir, "train", config["photo_limit"],
        config=EngineConfig.from_dict(config["engine"]), seed=config["seed"], device=device,
    )  # fmt: skip
    if config["batch_cache"]:
        return engine, BatchCache(config["batch_cache"], config)
    if not (config["real_cache"] and config["real_share"] > 0):
        return engine, engine
    real = RealFaces(engine.model, config["real_cache"], config["shared"], config["seed"],
                     tuple(config["real_subsets"]), config["photo_limit"],
                     config["real_profiling"])  # fmt: skip
    return engine, MixedFaces(engine, real, config["real_share"])


class TrainingBatches(torch.utils.data.Dataset):
    """Step `i`'s batch and its volume targets. On the CPU a `DataLoader` worker makes them,
    so that the next batch is made while this one trains (the engine and the network each
    run better on one core of two than taking turns on both)."""

    def __init__(self, data, config: dict, world: int, rank: int):
        self.data, self.config, self.world, self.rank = data, config, world, rank

    def __len__(self) -> int:
        return self.config["steps"]

    def __getitem__(self, step: int):
        batch = self.data.batch(step * self.world + self.rank, self.config["batch_size"])
        return batch, volume_targets(batch.front, batch.back, self.config["loss_resolution"])


def batch_loader(
    batches: TrainingBatches, first_step: int, device: torch.device
) -> torch.utils.data.DataLoader:
    """Batches from `first_step` on; made ahead by one worker process on the CPU (on a GPU
    the engine runs on the GPU, in this process; batches read from a cache need no worker)."""
    workers = 1 if device.type == "cpu" and not isinstance(batches.data, BatchCache) else 0
    return torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(first_step, len(batches)), num_workers=workers,
        prefetch_factor=2 if workers else None, worker_init_fn=_one_thread if workers else None,
    )  # fmt: skip


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)


def hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)}"
    processes = f"{world} processes of " if world > 1 else ""
    return (f"CPU {platform.processor() or platform.machine()}, {processes}"
            f"{torch.get_num_threads()} threads")  # fmt: skip


def atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(config: dict) -> Path:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if config["device"] == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config["device"])
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"] + rank)
    run_dir = Path(config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)

    engine, data = training_data(config, run_dir.parent / "cache", device)
    model = create_model(config["variant"]).to(device)
    if config["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    state_path, step, samples, seconds = run_dir / "state.pt", 0, 0, 0.0
    start_from = None
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, samples, seconds = state["step"], state["samples"], state["seconds"]
        torch.set_rng_state(state["torch_rng"])
        start_from = state.get("start_from")
    elif config["init_weights"]:
        start_from = start_from_checkpoint(model, config)
    else:
        init_output_bias(model, engine, config)
    net = StackLogits(model)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if rank == 0:
        where = f"resuming at step {step}" if step else "starting"
        print(f"{config['variant']}: {count_parameters(model):,} parameters on "
              f"{hardware(device, world)}; {where}", flush=True)  # fmt: skip

    def save() -> None:
        if rank != 0:
            return
        atomic_save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "samples": samples, "seconds": seconds, "torch_rng": torch.get_rng_state(),
             "config": config, "start_from": start_from},
            state_path,
        )  # fmt: skip
        meta = {
            "data": "facerecon synthetic engine (ICT face model shapes, UTKFace photo textures)"
            + (f"; {config['real_share']:.0%} of each batch real photos (CFP 001-400, 300-W "
               "helen_train + afw, less the validation split) with fitted ICT heads "
               "(training.realfit)"
               if data is not engine else ""),
            "engine": asdict(engine.config), "seed": config["seed"], "steps": step,
            "samples_seen": samples, "hours": round(seconds / 3600, 3),
            "hardware": hardware(device, world), "train_config": config,
            "loss": f"per-voxel sigmoid cross-entropy ({config['loss_resolution']})"
            + (f" + {config['landmark_weight']} x landmark_loss"
               if model.landmark_head is not None else ""),
            "start_from": start_from,  # the checkpoint a fine-tuning run began at
        }  # fmt: skip
        tmp = run_dir / "model.tmp"
        save_checkpoint(tmp, model, config["variant"], meta)
        os.replace(tmp, run_dir / "model.pt")

    # SIGTERM / Ctrl-C: finish the step, save, and exit (so a stopped run loses nothing).
    stopping = []
    previous = {sig: signal.signal(sig, lambda *_: stopping.append(True))
                for sig in (signal.SIGTERM, signal.SIGINT)}  # fmt: skip
    log = open(run_dir / "log.jsonl", "a") if rank == 0 else None
    model.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=device.type == "cuda" or config["cpu_bf16"])  # fmt: skip
    last_save = last_log = time.time()
    window_samples = 0
    batches = iter(batch_loader(
        TrainingBatches(data, config, world, rank), step, device
    ))  # fmt: skip
    while step < config["steps"] and not stopping:
        started = time.time()
        batch, targets = next(batches)
        images = batch.image
        if config["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        data_seconds = time.time() - started
        lr = learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # older states: one group
        with autocast:
            stacks, heatmaps = net(images)
        loss = volume_loss(stacks, targets, config["loss_resolution"])
        if heatmaps is not None:
            points_loss = landmark_loss(heatmaps, batch.points68.to(device))
            loss = loss + config["landmark_weight"] * points_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        optimizer.step()
        step += 1
        samples += config["batch_size"] * world
        window_samples += config["batch_size"] * world
        now = time.time()
        seconds += now - started

        if log and (step % config["log_every"] == 0 or step == config["steps"]):
            with torch.no_grad():
                logits = stacks[-1].float()
                if config["loss_resolution"] == "full":
                    logits = torch.nn.functional.interpolate(
                        logits, scale_factor=4.0, mode="bilinear"
                    )
                iou = volume_iou(logits, targets).item()
                if heatmaps is not None:  # median landmark error, crop pixels
                    error = (heatmap_points(heatmaps) - batch.points68.to(device)).norm(dim=-1)
                    extra = {"landmark_loss": round(points_loss.item(), 4),
                             "landmark_px": round(error.median().item(), 2)}  # fmt: skip
                else:
                    extra = {}
            rate = window_samples / (now - last_log)
            record = {"step": step, "loss": round(loss.item(), 5), "iou": round(iou, 4), **extra,
                      "lr": lr,
                      "samples": samples, "samples_per_s": round(rate, 3),
                      "data_s": round(data_seconds, 3), "hours": round(seconds / 3600, 4),
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}  # fmt: skip
            log.write(json.dumps(record) + "\n")
            log.flush()
            last_log, window_samples = now, 0
        if now - last_save > 60 * config["checkpoint_minutes"]:
            save()
            last_save = now
    save()
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if world > 1:
        dist.destroy_process_group()
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config entries (value parsed as YAML)")  # fmt: skip
    args = parser.parse_args()
    train(load_config(args.config, args.set))


if __name__ == "__main__":
    main()
