"""Training batches made once and read back: `training.train`'s `batch_cache`.

    python -m training.batch_cache --config training/configs/X.yaml --steps 4000 \
        --out runs/batches/X [--shard 0/2] [--set key=value ...]

Making a batch (the synthetic engine's render, a real photo's crop and targets) costs about
as much CPU as training on it, so on this 2-core CPU the loop that makes its own batches
trains at the speed of one core. Batches made ahead, once, leave both cores to the network
(two DDP processes: `torchrun --nproc_per_node 2 -m training.train ... --set
batch_cache=runs/batches/X threads=1`) and can be reused: by every arm of an A/B that shares
a data recipe and seed, and by later epochs, since a run of more steps than the cache holds
starts over from its first batch.

Batch `i` is the config's data (`training.train.training_data`) at index `i`, the index a
training step asks for (`step * world + rank`), so a cache written with `batch_size` 4
serves two DDP processes of 4 (8 a step, as one process of 8 sees). Each batch is one file
of what training reads: the image (uint8), the nearest and farthest surface depths (fp16:
at most 1/16 px off below depth 256, a sixteenth of a volume slice) and the 68 points.
Writing resumes: files already there are kept; `--shard k/n` writes every n-th batch from
the k-th, so that n processes can share the work.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

META = "cache.json"
# the config entries that decide the batches: a run reads a cache only if its own agree
DATA_KEYS = ("batch_size", "seed", "engine", "shared", "photo_limit", "real_cache",
             "real_share", "real_subsets", "real_profiling")  # fmt: skip


def data_recipe(config: dict) -> dict:
    return json.loads(json.dumps({key: config[key] for key in DATA_KEYS}))


@dataclass
class CachedBatch:
    """The fields of `training.engine.synth.Batch` that training reads."""

    image: torch.Tensor  # (B, 3, 192, 192) float in [0, 1]
    front: torch.Tensor  # (B, 192, 192) float32
    back: torch.Tensor
    points68: torch.Tensor  # (B, 68, 2)


def batch_file(folder: Path, index: int) -> Path:
    return folder / f"{index:07d}.pt"


def write_batch(batch, path: Path) -> None:
    record = {
        "image": (batch.image * 255).round().clamp(0, 255).to(torch.uint8),
        "front": batch.front.half(),
        "back": batch.back.half(),
        "points68": batch.points68.float(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(record, tmp)
    os.replace(tmp, path)


class BatchCache:
    """`batch(index, size)` as the engine gives it, read from a folder that
    `python -m training.batch_cache` wrote; index `i` of a cache of n batches is batch i % n."""

    def __init__(self, folder: str | Path, config: dict):
        """`config`: the run's, whose data recipe must be the one the cache was written with."""
        self.folder = Path(folder)
        meta, recipe = json.loads((self.folder / META).read_text()), data_recipe(config)
        if meta["recipe"] != recipe:
            differ = sorted(k for k in DATA_KEYS if meta["recipe"].get(k) != recipe[k])
            raise ValueError(f"{self.folder} was written with other data settings: {differ}")
        self.batch_size, self.count = meta["recipe"]["batch_size"], meta["batches"]
        missing = [i for i in range(self.count) if not batch_file(self.folder, i).exists()]
        if missing:
            raise FileNotFoundError(
                f"{self.folder} lacks {len(missing)} of its {self.count} batches (first: "
                f"{missing[0]}); finish writing it with python -m training.batch_cache"
            )

    def __len__(self) -> int:
        return self.count

    def batch(self, index: int, size: int) -> CachedBatch:
        if size != self.batch_size:
            raise ValueError(f"{self.folder} holds batches of {self.batch_size}, not {size}")
        record = torch.load(batch_file(self.folder, index % self.count), weights_only=True)
        return CachedBatch(
            image=record["image"].float() / 255,
            front=record["front"].float(),
            back=record["back"].float(),
            points68=record["points68"],
        )


def write_cache(
    data, config: dict, folder: Path, batches: int, shard: int = 0, shards: int = 1
) -> int:
    """Writes `data`'s batches `shard`, `shard + shards`, ... below `batches` that are not
    there yet; returns how many it wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / META
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["recipe"] != data_recipe(config):
            raise ValueError(f"{folder} was written with other data settings; use a new folder")
        batches = max(batches, meta["batches"])  # a shorter call does not shrink the cache
    meta_path.write_text(json.dumps({"recipe": data_recipe(config), "batches": batches}) + "\n")
    written = 0
    for index in range(shard, batches, shards):
        path = batch_file(folder, index)
        if not path.exists():
            write_batch(data.batch(index, config["batch_size"]), path)
            written += 1
    return written


def main() -> None:
    from training.train import REPO, load_config, training_data  # (train.py imports this)

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True, help="batches to write")
    parser.add_argument("--shard", default="0/1", help="k/n: write every n-th batch from k")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config entries, as training.train does")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    shard, shards = (int(x) for x in args.shard.split("/"))
    config = load_config(args.config, args.set)
    _, data = training_data(config, REPO / "runs" / "cache", torch.device("cpu"))
    written = write_cache(data, config, args.out, args.steps, shard, shards)
    print(f"wrote {written} batches of {config['batch_size']} to {args.out}")


if __name__ == "__main__":
    main()
