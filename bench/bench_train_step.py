"""The bare training step on this CPU, by precision and memory layout (issue 16, item 3).

python -m bench.bench_train_step [--variant vrn-light-landmarks] [--batch 8] [--rounds 4]

One step of `training.train` without data loading: forward, the volume and landmark
losses, backward, AdamW. The layouts and precisions are timed interleaved, round after
round (this machine's speed drifts), and each reports its median samples/s. Writes
bench/results/train_step.json.
"""

from __future__ import annotations

# ruff: noqa: E402  (OMP_WAIT_POLICY must be set before torch loads OpenMP, as train.py does)
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import time

import torch

from bench.results_io import save
from facerecon.models import create_model
from training.losses import StackLogits, landmark_loss, volume_loss

SETTINGS = {  # name: (channels_last, bf16 autocast)
    "fp32 NCHW": (False, False),
    "fp32 channels-last": (True, False),
    "bf16 autocast NCHW": (False, True),
    "bf16 autocast channels-last": (True, True),
}


def train_step(net, optimizer, images, targets, points, bf16: bool) -> None:
    """One step of `training.train` on a ready batch: forward, the volume and landmark
    losses, backward, AdamW."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        stacks, heatmaps = net(images)
    loss = volume_loss(stacks, targets, "pooled")
    if heatmaps is not None:
        loss = loss + 0.02 * landmark_loss(heatmaps, points)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def rates_report(rates: dict[str, list[float]], versus: str) -> dict:
    """Each arm's samples/s: the median of its rounds, every round, and the median over the
    first arm's (as `versus`)."""
    baseline = statistics.median(next(iter(rates.values())))
    return {name: {"median": round(statistics.median(r), 2), "all": [round(x, 2) for x in r],
                   versus: round(statistics.median(r) / baseline, 2)}
            for name, r in rates.items()}  # fmt: skip


def make_step(variant: str, channels_last: bool, bf16: bool, batch: int):
    torch.manual_seed(0)
    model = create_model(variant)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net, optimizer = StackLogits(model), torch.optim.AdamW(model.parameters(), 1e-4)
    images = torch.rand(batch, 3, 192, 192)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.rand(batch, model.config.slices, 48, 48)
    points = torch.rand(batch, max(model.config.landmarks, 1), 2) * 191

    return lambda: train_step(net, optimizer, images, targets, points, bf16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="vrn-light-landmarks")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {name: make_step(args.variant, *flags, args.batch) for name, flags in SETTINGS.items()}
    for step in steps.values():  # warm-up: first steps allocate and pick kernels
        step()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[name].append(args.steps * args.batch / (time.perf_counter() - start))
    report = {
        "variant": args.variant, "batch": args.batch, "threads": args.threads,
        "rounds": args.rounds, "steps_per_round": args.steps,
        "samples_per_s": rates_report(rates, "vs_fp32_nchw"),
    }  # fmt: skip
    save("train_step", report)
    for name, r in report["samples_per_s"].items():
        print(f"{name:30s} {r['median']:6.2f} samples/s  ({r['vs_fp32_nchw']:.2f}x)  {r['all']}")


if __name__ == "__main__":
    main()
