"""VolumePose: head pose read off a VRN occupancy volume by a small CNN.

The input is the occupancy volume average-pooled to 48 x 48 in x, y: `(N, slices, 48, 48)`,
the resolution of VRN's own logits before their 4x upsampling, with the depth slices as
channels (a 1x1 convolution first reads each column's depth profile). The output is the
head's rotation in the continuous 6D representation of Zhou et al. (CVPR 2019): its forward
axis `R @ (0, 0, 1)` and up axis `R @ (0, 1, 0)` in the y-up camera frame (DEVELOPERS.md),
orthonormalised by Gram-Schmidt (`rotation_from_6d`).

The volume's rows grow downwards (`[d, y, x]`), the rotation's frame points y up: the
network learns that mapping from its training labels, nothing here flips axes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerecon.pose import Pose, pose_from_rotation
from facerecon.volume import CoarseVolume

POOL = 4  # 192 -> 48: the VRN logits' resolution


@dataclass(frozen=True)
class VolumePoseConfig:
    slices: int = 200  # input channels: the volume's depth slices
    size: int = 48  # input height and width (the volume pooled by POOL)
    depth_features: int = 32  # 1x1 convolution over each column's depth profile
    widths: tuple[int, ...] = (32, 48, 64, 96)  # one stride-2 stage each: 48 -> 3
    hidden: int = 128

    def to_dict(self) -> dict:
        return asdict(self)


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class VolumePose(nn.Module):
    def __init__(self, config: VolumePoseConfig):
        super().__init__()
        if isinstance(config.widths, list):  # from a checkpoint's config dict
            config = VolumePoseConfig(**{**config.to_dict(), "widths": tuple(config.widths)})
        self.config = config
        stages, cin = [conv_bn_relu(config.slices, config.depth_features, 1)], config.depth_features
        for width in config.widths:
            stages += [conv_bn_relu(cin, width, 3, 2), conv_bn_relu(width, width, 3)]
            cin = width
        self.features = nn.Sequential(*stages)
        side = config.size // 2 ** len(config.widths)
        # flattened, not globally pooled: where the nose is, relative to the head, matters
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * side * side, config.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden, 6),
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, slices, 48, 48) occupancy in [0, 1] -> (N, 6): unnormalised forward and up."""
        return self.head(self.features(pooled * 2.0 - 1.0))

    def rotation(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, slices, 48, 48) occupancy -> (N, 3, 3) rotations (y-up camera frame)."""
        return rotation_from_6d(self(pooled))


@torch.inference_mode()
def estimate_volume_pose(
    model: VolumePose, volume: np.ndarray | torch.Tensor | CoarseVolume
) -> Pose:
    """The head pose in one occupancy volume in [0, 1]: `(slices, 192, 192)` (pooled here),
    already pooled `(slices, 48, 48)`, or the network's `CoarseVolume` (pooled exactly,
    without making the full volume)."""
    if isinstance(volume, CoarseVolume):
        volume = volume.pooled()
    x = torch.as_tensor(volume, dtype=torch.float32)[None]
    if x.shape[-1] != model.config.size:
        x = pool_volume(x)
    return pose_from_rotation(model.rotation(x)[0].double().numpy())


def pool_volume(volume: torch.Tensor) -> torch.Tensor:
    """(N, slices, 192, 192) occupancy -> (N, slices, 48, 48), averaged over 4 x 4 pixels."""
    return F.avg_pool2d(volume, POOL)


def rotation_from_6d(x: torch.Tensor) -> torch.Tensor:
    """(N, 6) = (forward, up), unnormalised -> (N, 3, 3) rotations with columns
    (left-right, up, forward): forward is normalised, up made orthogonal to it."""
    forward = F.normalize(x[:, :3], dim=1)
    up = x[:, 3:]
    up = F.normalize(up - (up * forward).sum(1, keepdim=True) * forward, dim=1)
    return torch.stack([torch.linalg.cross(up, forward, dim=1), up, forward], dim=2)


def rotation_to_6d(rotation: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotations -> (N, 6) = (forward, up): the inverse of `rotation_from_6d`."""
    return torch.cat([rotation[:, :, 2], rotation[:, :, 1]], dim=1)
