"""Occupancy targets from front/back depth maps: the solid between the two surfaces.

Depth z is in crop pixels with 0 at the volume's middle; slice d holds z = d - 100.
Filling is a broadcast comparison per column (no per-voxel inside tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SLICES = 200


def slice_depths(slices: int, device: torch.device | str) -> torch.Tensor:
    return torch.arange(slices, device=device, dtype=torch.float32) - slices // 2


def fill_volume(front: torch.Tensor, back: torch.Tensor, slices: int = SLICES) -> torch.Tensor:
    """(B, H, W) depth maps -> (B, slices, H, W) bool occupancy (empty where front < back)."""
    z = slice_depths(slices, front.device).view(1, -1, 1, 1)
    return (z >= back.unsqueeze(1)) & (z <= front.unsqueeze(1))


def pooled_volume(
    front: torch.Tensor, back: torch.Tensor, factor: int = 4, slices: int = SLICES
) -> torch.Tensor:
    """Occupancy averaged over factor x factor pixel blocks: (B, slices, H/f, W/f) in [0, 1].

    The soft target for the network's 48 x 48 logits (before their 4x upsampling).
    """
    chunks = [
        F.avg_pool2d(fill_volume(f, b, slices).float(), factor)
        for f, b in zip(front.split(4), back.split(4), strict=True)  # bounds peak memory
    ]
    return torch.cat(chunks)
