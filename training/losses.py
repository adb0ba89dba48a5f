"""The VRN objective (per-voxel sigmoid cross-entropy) and volume IoU."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.engine.voxelize import fill_volume, pooled_volume


def volume_targets(front: torch.Tensor, back: torch.Tensor, resolution: str) -> torch.Tensor:
    """Targets for the 48 x 48 logits ("pooled": soft, 4x4-averaged) or the full volume."""
    if resolution == "pooled":
        return pooled_volume(front, back)
    if resolution == "full":
        return fill_volume(front, back).float()
    raise ValueError(f"unknown loss resolution {resolution!r}")


class StackLogits(torch.nn.Module):
    """Wraps a VRN so that `forward` returns every supervised stack's 48 x 48 logits.

    (DistributedDataParallel synchronises gradients only through `forward`.)
    """

    def __init__(self, vrn: torch.nn.Module):
        super().__init__()
        self.vrn = vrn

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.vrn.forward_logits(images)


def volume_loss(stacks: list[torch.Tensor], targets: torch.Tensor, resolution: str) -> torch.Tensor:
    """Mean per-voxel BCE over the supervised stacks' logits (upsampled if "full")."""
    if resolution == "full":
        stacks = [F.interpolate(s, scale_factor=4.0, mode="bilinear", align_corners=False)
                  for s in stacks]  # fmt: skip
    losses = [F.binary_cross_entropy_with_logits(s.float(), targets) for s in stacks]
    return torch.stack(losses).mean()


def volume_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the predicted (p > 0.5) and target (> 0.5) occupancy over the whole batch."""
    predicted, target = logits > 0, targets > 0.5
    union = (predicted | target).sum()
    return (predicted & target).sum() / union.clamp_min(1)
