"""Contact sheet of engine samples: each image beside its target volume's surface.

`python -m training.contact_sheet --out training/contact_sheet.png` draws 64 samples;
the right tile of each pair is the image with the shaded front surface of the voxelised
target (first occupied slice along each ray) blended over it, so misalignment shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.engine.synth import SyntheticFaces
from training.engine.voxelize import fill_volume


def volume_surface(volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D, H, W) bool -> depth index of the nearest occupied slice, and its mask."""
    slices = volume.shape[1]
    index = torch.arange(slices, device=volume.device).view(1, -1, 1, 1)
    depth = torch.where(volume, index, -1).amax(1)
    return depth.float(), depth >= 0


def shaded(depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Lambert-shaded (B, H, W) depth maps in [0, 1] (light from the camera, upper left)."""
    dz_dx = torch.zeros_like(depth)
    dz_dy = torch.zeros_like(depth)
    dz_dx[:, :, 1:-1] = (depth[:, :, 2:] - depth[:, :, :-2]) / 2
    dz_dy[:, 1:-1] = (depth[:, 2:] - depth[:, :-2]) / 2
    normal = torch.stack([-dz_dx, dz_dy, torch.ones_like(depth)], 1)  # y up
    normal = normal / normal.norm(dim=1, keepdim=True)
    light = torch.tensor([-0.4, 0.4, 0.82]).view(1, 3, 1, 1)
    return ((normal * light).sum(1).clamp(0, 1) * mask).clamp(0, 1)


def contact_sheet(
    engine: SyntheticFaces, count: int = 64, columns: int = 8, tile: int = 112
) -> Image.Image:
    batch = engine.batch(0, count)
    volume = fill_volume(batch.front, batch.back)
    depth, mask = volume_surface(volume)
    shade = shaded(depth, mask)
    image = batch.image
    tint = torch.stack([shade, shade * 0.9, shade * 0.5], 1)
    overlay = torch.where(mask[:, None], 0.35 * image + 0.65 * tint, image)
    pairs = torch.cat([image, overlay], -1)  # (B, 3, H, 2W)
    pairs = torch.nn.functional.interpolate(pairs, size=(tile, 2 * tile), mode="area")
    tiles = (pairs.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    rows = [np.concatenate(list(tiles[r : r + columns]), 1) for r in range(0, count, columns)]
    return Image.fromarray(np.concatenate(rows, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--cache", default="runs/cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--out", default="training/contact_sheet.png")
    args = parser.parse_args()
    engine = SyntheticFaces.from_shared(args.shared, args.cache, seed=args.seed)
    contact_sheet(engine, args.count, columns=8).quantize(256).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
