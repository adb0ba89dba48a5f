"""The training loop with its data on this CPU: round 3's, round 4's and today's (issue 16,
item 3).

python -m bench.bench_train_loop [--config training/configs/vrn-light-landmarks-cpu-r4.yaml]
    [--rounds 3] [--steps 8]

Each arm runs `training.train`'s step (forward, the volume and landmark losses, backward,
AdamW) on the config's real batches (half real photos, half synthetic):
- round 3: fp32, NCHW, each batch made in the loop;
- round 4: bf16 autocast, channels-last, each batch made in the loop;
- now: the same, each batch made ahead by a `DataLoader` worker (`training.train.batch_loader`);
- now, one training thread: the same with the network on one thread, the worker on the other
  core.
The arms run in turns, round after round (this machine's speed drifts); in each round every
arm first runs 2 untimed steps (so a worker's batches made ahead of the round are used up),
then `--steps` timed ones. Writes bench/results/train_loop.json. Needs ../shared and the fit
cache (`python -m training.realfit.build`).
"""

from __future__ import annotations

# ruff: noqa: E402  (OMP_WAIT_POLICY must be set before torch loads OpenMP, as train.py does)
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from pathlib import Path

import torch

from bench.bench_train_step import rates_report, train_step
from bench.results_io import save
from facerecon.models import create_model
from training.losses import StackLogits
from training.train import TrainingBatches, batch_loader, load_config, training_data

REPO = Path(__file__).resolve().parents[1]
ARMS = {  # name: (bf16 autocast + channels-last, batches made by a worker, torch threads)
    "round 3: fp32 NCHW, data in the loop": (False, False, None),
    "round 4: bf16 channels-last, data in the loop": (True, False, None),
    "now: bf16 channels-last, data made ahead by a worker": (True, True, None),
    "now, one training thread": (True, True, 1),
}
UNTIMED = 2


class Arm:
    def __init__(
        self, config: dict, data, fast: bool, worker: bool, threads: int | None, first_step: int
    ):
        torch.manual_seed(0)
        self.threads = threads
        self.model = create_model(config["variant"])
        self.fast = fast
        if fast:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = StackLogits(self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), config["lr"])
        batches = TrainingBatches(data, config, 1, 0)
        cpu = torch.device("cpu")
        self.batches = iter(batch_loader(batches, first_step, cpu)) if worker else None
        self.make, self.step_index = batches.__getitem__, first_step

    def step(self) -> None:
        if self.batches is not None:
            batch, targets = next(self.batches)
        else:
            batch, targets = self.make(self.step_index)
        self.step_index += 1
        images = batch.image
        if self.fast:
            images = images.contiguous(memory_format=torch.channels_last)
        train_step(self.net, self.optimizer, images, targets, batch.points68, self.fast)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", type=Path, default=REPO / "training/configs/vrn-light-landmarks-cpu-r4.yaml"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, ["init_weights=null"])
    _, data = training_data(config, REPO / "runs" / "cache", torch.device("cpu"))
    # every arm trains on the same batches (steps 0, 1, ...): the same data work
    arms = {name: Arm(config, data, *flags, first_step=0) for name, flags in ARMS.items()}
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, arm in arms.items():
            torch.set_num_threads(arm.threads or args.threads)
            for _ in range(UNTIMED):
                arm.step()
            start = time.perf_counter()
            for _ in range(args.steps):
                arm.step()
            rates[name].append(args.steps * config["batch_size"] / (time.perf_counter() - start))
    report = {
        "config": str(args.config.resolve().relative_to(REPO)), "variant": config["variant"],
        "batch": config["batch_size"], "real_share": config["real_share"],
        "threads": args.threads, "rounds": args.rounds, "steps_per_round": args.steps,
        "samples_per_s": rates_report(rates, "vs_round_3"),
    }  # fmt: skip
    save("train_loop", report)


if __name__ == "__main__":
    main()
