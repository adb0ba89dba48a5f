"""The VRN objective (per-voxel sigmoid cross-entropy), volume IoU, and the landmark head's
objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facerecon.models.vrn import heatmap_points
from training.engine.voxelize import fill_volume, pooled_volume


def volume_targets(front: torch.Tensor, back: torch.Tensor, resolution: str) -> torch.Tensor:
    """Targets for the 48 x 48 logits ("pooled": soft, 4x4-averaged) or the full volume."""
    if resolution == "pooled":
        return pooled_volume(front, back)
    if resolution == "full":
        return fill_volume(front, back).float()
    raise ValueError(f"unknown loss resolution {resolution!r}")


class StackLogits(torch.nn.Module):
    """Wraps a VRN so that `forward` returns every supervised stack's 48 x 48 logits, and the
    landmark heatmaps (or None).

    (DistributedDataParallel synchronises gradients only through `forward`.)
    """

    def __init__(self, vrn: torch.nn.Module):
        super().__init__()
        self.vrn = vrn

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        return self.vrn.forward_heads(images)


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


HEATMAP_SIGMA_CELLS = 1.0  # the target distribution's spread, in heatmap cells


def landmark_loss(heatmaps: torch.Tensor, points: torch.Tensor, size: int = 192) -> torch.Tensor:
    """The landmark head's objective for (N, K, h, w) heatmap logits and (N, K, 2) target
    crop pixels: the soft-argmax's L1 error in heatmap cells, plus the KL divergence of each
    softmax map from a Gaussian around its target (keeps the maps one-peaked, so the
    soft-argmax is not a mean of two guesses). Points outside the crop are left out."""
    n, k, h, w = heatmaps.shape
    cell = size / w
    valid = ((points >= 0) & (points <= size - 1)).all(-1)  # (N, K)
    error = (heatmap_points(heatmaps, size) - points).abs().sum(-1) / cell
    log_p = heatmaps.float().flatten(2).log_softmax(-1)
    xs = (torch.arange(w, device=points.device) + 0.5) * cell - 0.5  # as heatmap_points
    ys = (torch.arange(h, device=points.device) + 0.5) * cell - 0.5
    dx = (xs[None, None, :] - points[..., :1]) / cell  # (N, K, w)
    dy = (ys[None, None, :] - points[..., 1:]) / cell  # (N, K, h)
    target = torch.exp(-(dy[..., :, None] ** 2 + dx[..., None, :] ** 2)
                       / (2 * HEATMAP_SIGMA_CELLS**2)).flatten(2)  # fmt: skip
    target = target / target.sum(-1, keepdim=True).clamp_min(1e-12)
    divergence = (target * (target.clamp_min(1e-12).log() - log_p)).sum(-1)  # KL: 0 at best
    per_point = (error + divergence) * valid
    return per_point.sum() / valid.sum().clamp_min(1)
