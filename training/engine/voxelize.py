"""Occupancy targets from front/back depth maps: the solid between the two surfaces.

Depth z is in crop pixels with 0 at the volume's middle; slice d holds z = d - 100.
Filling is a broadcast comparison per column (no per-voxel inside tests).
"""

from __future__ import annotations

import torch

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

    The soft target for the network's 48 x 48 logits (before their 4x upsampling). Equal to
    `avg_pool2d(fill_volume(front, back))`, but each pixel's run of occupied slices is added
    as +1 at its first slice and -1 after its last, then summed along d: no full volume.
    """
    batch, h, w = front.shape
    half = slices // 2
    first = torch.ceil(back + half).clamp(0, slices)
    stop = (torch.floor(front + half) + 1).clamp(0, slices)
    occupied = stop > first  # also False for empty pixels (front -inf, back +inf)
    first = torch.where(occupied, first, 0).long()
    stop = torch.where(occupied, stop, 0).long()
    cell = (torch.arange(h, device=front.device) // factor)[:, None] * (w // factor) + (
        torch.arange(w, device=front.device) // factor
    )[None, :]
    cells = (h // factor) * (w // factor)
    base = torch.arange(batch, device=front.device)[:, None, None] * (slices + 1) * cells
    delta = torch.zeros(batch * (slices + 1) * cells, device=front.device)
    ones = occupied.float()
    delta.index_add_(0, (base + first * cells + cell).view(-1), ones.view(-1))
    delta.index_add_(0, (base + stop * cells + cell).view(-1), -ones.view(-1))
    counts = delta.view(batch, slices + 1, cells).cumsum(1)[:, :slices]
    return (counts / factor**2).view(batch, slices, h // factor, w // factor)
