"""The network's answer before its 4x upsampling: logits `(slices, 48, 48)`.

`VRN.forward` upsamples these logits bilinearly to the 192 x 192 crop, and the
occupancy volume is their sigmoid: 200 x 192 x 192 floats (30 MB) that most of the service
never needs. The mesh is found on the coarse logits and upsampled as a depth map
(`facerecon.mesh.height_map_mesh`), the volume-pose network reads a 48 x 48 pooling of the
volume, so `Reconstructor.predict` hands back a `CoarseVolume` and the full volume is made only when
something asks for it (`probability()`, or `np.asarray`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True, eq=False)
class CoarseVolume:
    """Occupancy logits `(slices, h, w)` float32 whose `factor`-times bilinear upsampling
    (align_corners=False, as `VRN.forward`) then sigmoid is the occupancy volume."""

    logits: np.ndarray
    factor: int = 4

    def __post_init__(self) -> None:
        if self.logits.ndim != 3:
            raise ValueError(f"logits must be (slices, h, w), got {self.logits.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of the full volume it stands for."""
        d, h, w = self.logits.shape
        return d, h * self.factor, w * self.factor

    def probability(self) -> np.ndarray:
        """The full occupancy volume `(slices, H, W)` in [0, 1], as `VRN.forward` + sigmoid."""
        logits = torch.from_numpy(self.logits)[None]
        up = F.interpolate(logits, scale_factor=float(self.factor), mode="bilinear",
                           align_corners=False)  # fmt: skip
        return torch.sigmoid_(up)[0].numpy()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        volume = self.probability()
        return volume if dtype is None else volume.astype(dtype, copy=False)

    def pooled(self) -> np.ndarray:
        """The full volume average-pooled over `factor` x `factor` pixels `(slices, h, w)`
        (the head-pose network's input), without making the full volume: the bilinear
        upsampling is separable, so each of the factor^2 sub-pixel positions of a cell is one
        fixed blend of the cell and a neighbour; their sigmoids are averaged."""
        logits = torch.from_numpy(self.logits)[None]
        # torch clamps source positions to the border: replicate padding does the same
        padded = F.pad(logits, (1, 1, 1, 1), mode="replicate")[0]
        h, w = logits.shape[-2:]
        total = torch.zeros_like(logits[0])
        for rows in _blends(self.factor):
            mixed_rows = _blend(padded, rows, 1, h)
            for cols in _blends(self.factor):
                total += torch.sigmoid_(_blend(mixed_rows, cols, 2, w))
        return (total / float(self.factor**2)).numpy()


def _blends(factor: int) -> list[tuple[int, float]]:
    """Each sub-pixel position of `factor`-times bilinear upsampling (align_corners=False) as
    (neighbour offset -1 or +1, its weight); the cell itself has 1 - weight."""
    out = []
    for k in range(factor):
        source = (k + 0.5) / factor - 0.5  # relative to the cell's centre, in (-0.5, 0.5)
        out.append((-1, -source) if source < 0 else (1, source))
    return out


def _blend(padded: torch.Tensor, blend: tuple[int, float], dim: int, n: int) -> torch.Tensor:
    """`(1 - weight) * cell + weight * neighbour` along `dim` of a tensor padded by one there."""
    offset, weight = blend
    cell = padded.narrow(dim, 1, n)
    neighbour = padded.narrow(dim, 1 + offset, n)
    return torch.lerp(cell, neighbour, weight)
