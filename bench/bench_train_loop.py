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
  core;
- batch cache: the same batches read from a `training.batch_cache` folder, the network on
  both threads;
- batch cache, two processes: two DDP processes (gloo) of one thread and half the batch each,
  as `torchrun --nproc_per_node 2 -m training.train --set batch_cache=... threads=1` runs.
The caches are written first, untimed; what writing costs (samples/s on one core) is
reported beside the rates, since a cache pays only when it is reused (A/B arms that share a
recipe, later epochs). The arms run in turns, round after round (this machine's speed
drifts); in each round every arm waits 3 s idle (so that the worker of the arm before stops
making batches ahead), runs 2 untimed steps (so that its own worker's batches made ahead are
used up), then `--steps` timed ones. Writes bench/results/train_loop.json.
Needs ../shared and the fit cache (`python -m training.realfit.build`).
"""

from __future__ import annotations

# ruff: noqa: E402  (OMP_WAIT_POLICY must be set before torch loads OpenMP, as train.py does)
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.bench_train_step import rates_report, train_step
from bench.results_io import save
from facerecon.models import create_model
from training.batch_cache import BatchCache, write_cache
from training.losses import StackLogits
from training.train import TrainingBatches, batch_loader, load_config, training_data

REPO = Path(__file__).resolve().parents[1]
ARMS = {  # name: (bf16 autocast + channels-last, batches made by a worker, torch threads)
    "round 3: fp32 NCHW, data in the loop": (False, False, None),
    "round 4: bf16 channels-last, data in the loop": (True, False, None),
    "now: bf16 channels-last, data made ahead by a worker": (True, True, None),
    "now, one training thread": (True, True, 1),
}
CACHED = "batch cache, two threads"
TWO_PROCESSES = "batch cache, two processes of one thread (DDP)"
UNTIMED = 2
SETTLE_S = 3.0  # idle before an arm's turn: the last arm's worker stops making batches ahead
CACHE_BATCHES = 6  # read in turn: reading batch i costs the same for every i


class Arm:
    def __init__(
        self, config: dict, data, fast: bool, worker: bool, threads: int | None, first_step: int,
        world: int = 1, rank: int = 0,
    ):  # fmt: skip
        torch.manual_seed(0)
        self.threads = threads
        self.model = create_model(config["variant"])
        self.fast = fast
        if fast:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = StackLogits(self.model)
        if world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.net)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), config["lr"])
        batches = TrainingBatches(data, config, world, rank)
        cpu = torch.device("cpu")
        self.batches = iter(batch_loader(batches, first_step, cpu)) if worker else None
        self.make, self.step_index = batches.__getitem__, first_step

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

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


class TwoProcessArm:
    """Two DDP processes of one thread, each training on half of every batch; `run(steps)`
    returns when both have taken the steps."""

    threads = 1

    def __init__(self, config: dict):
        context = mp.get_context("spawn")
        with socket.socket() as s:  # a free port for gloo's rendezvous
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.pipes = []
        for rank in range(2):
            ours, theirs = context.Pipe()
            context.Process(
                target=_two_process_rank, args=(rank, port, config, theirs), daemon=True
            ).start()
            self.pipes.append(ours)
        for pipe in self.pipes:
            pipe.recv()  # ready

    def run(self, steps: int) -> None:
        for pipe in self.pipes:
            pipe.send(steps)
        for pipe in self.pipes:
            pipe.recv()


def _two_process_rank(rank: int, port: int, config: dict, pipe) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    data = BatchCache(config["batch_cache"], config)
    arm = Arm(config, data, True, False, 1, first_step=0, world=2, rank=rank)
    pipe.send("ready")
    while True:
        try:
            steps = pipe.recv()
        except EOFError:  # the bench is done
            return
        arm.run(steps)
        pipe.send("done")


def cached(config: dict, data, folder: Path, batch_size: int) -> tuple[dict, float]:
    """`config` reading a cache of `batch_size` batches written to `folder` from `data`, and
    the samples/s that writing it took."""
    config = {**config, "batch_size": batch_size, "batch_cache": str(folder)}
    start = time.perf_counter()
    write_cache(data, config, folder, CACHE_BATCHES)
    return config, CACHE_BATCHES * batch_size / (time.perf_counter() - start)


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
    with tempfile.TemporaryDirectory() as folder:
        torch.set_num_threads(1)  # as python -m training.batch_cache writes
        whole, writing = cached(config, data, Path(folder) / "whole", config["batch_size"])
        halves, _ = cached(config, data, Path(folder) / "halves", config["batch_size"] // 2)
        torch.set_num_threads(args.threads)
        arms[CACHED] = Arm(whole, BatchCache(whole["batch_cache"], whole), True, False, None, 0)
        arms[TWO_PROCESSES] = TwoProcessArm(halves)
        rates: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.rounds):
            for name, arm in arms.items():
                torch.set_num_threads(arm.threads or args.threads)
                time.sleep(SETTLE_S)
                arm.run(UNTIMED)
                start = time.perf_counter()
                arm.run(args.steps)
                seconds = time.perf_counter() - start
                rates[name].append(args.steps * config["batch_size"] / seconds)
    report = {
        "config": str(args.config.resolve().relative_to(REPO)), "variant": config["variant"],
        "batch": config["batch_size"], "real_share": config["real_share"],
        "threads": args.threads, "rounds": args.rounds, "steps_per_round": args.steps,
        "samples_per_s": rates_report(rates, "vs_round_3"),
        "cache_writing_samples_per_s_one_core": round(writing, 2),
    }  # fmt: skip
    save("train_loop", report)


if __name__ == "__main__":
    main()
