"""Synthetic data engine throughput: samples/s (and per core) with targets for training.

    python -m bench.bench_engine [--batch-size 8] [--batches 6] [--threads 1,2]

A sample = one image plus its pooled 200 x 48 x 48 training target. The engine runs on
the CPU here (CUDA when available, with --device cuda). The machine's load average is
recorded: on a shared machine the figures are lower bounds.
"""

from __future__ import annotations

# ruff: noqa: E402  (OMP_WAIT_POLICY must be set before torch is imported)
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as training/train.py runs

import argparse
import time
from pathlib import Path

import torch

from bench.results_io import save
from training.engine.synth import SyntheticFaces
from training.engine.voxelize import pooled_volume

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def time_engine(engine: SyntheticFaces, batch_size: int, batches: int) -> dict:
    engine.batch(10_000, batch_size)  # warm-up: caches, allocator
    start = time.perf_counter()
    for i in range(batches):
        batch = engine.batch(i, batch_size)
        pooled_volume(batch.front, batch.back)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"samples_per_s": round(batch_size * batches / seconds, 2),
            "ms_per_sample": round(1000 * seconds / (batch_size * batches), 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", default="runs/cache")
    args = parser.parse_args()
    engine = SyntheticFaces.from_shared(SHARED, args.cache, seed=0, device=args.device)
    runs = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        figures = time_engine(engine, args.batch_size, args.batches)
        figures["samples_per_s_per_core"] = round(figures["samples_per_s"] / threads, 2)
        runs[f"{threads}_threads"] = figures
    save("engine", {
        "device": args.device, "batch_size": args.batch_size,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "samples_per_batch_measured": args.batch_size * args.batches,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2), "runs": runs,
    })  # fmt: skip


if __name__ == "__main__":
    main()
