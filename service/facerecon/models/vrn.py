"""VRN: Volumetric Regression Network (Jackson et al., ICCV 2017).

Two stacked hourglasses regress a 200 x 192 x 192 occupancy volume of the face from a
192 x 192 RGB image in [0, 1]. Channel d of the output is depth slice d (d grows towards
the camera); x and y are the crop's pixels.

With `landmarks` > 0 it is also VRN-Multitask's sibling: a 1x1 head beside the volume's
reads the same features into one heatmap per landmark (48 x 48 logits); `heatmap_points`
turns them into sub-pixel crop coordinates (a soft-argmax, so no 4-pixel quantisation).

Residual modules are bottlenecks in conv -> BN -> ReLU order (rather than Newell's
pre-activation order) so that every batch-norm folds into the convolution before it
for inference (see `fold_batchnorm`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VRNConfig:
    features: int = 256  # channels inside the hourglasses
    stacks: int = 2  # hourglasses, one after another
    depth: int = 4  # pooling levels per hourglass
    modules: int = 3  # residual modules at each hourglass stage
    slices: int = 200  # depth slices of the output volume
    input_size: int = 192
    intermediate_supervision: bool = False  # the paper's plain VRN has none
    landmarks: int = 0  # landmark heatmaps beside the volume (68: the iBUG points), 0: none

    def to_dict(self) -> dict:
        return asdict(self)


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)
    )


class Residual(nn.Module):
    """Bottleneck: 1x1 (cout/2) -> 3x3 (cout/2) -> 1x1 (cout), plus a projected skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(
            conv_bn(cin, mid), nn.ReLU(inplace=True),
            conv_bn(mid, mid, 3), nn.ReLU(inplace=True),
            conv_bn(mid, cout),
        )  # fmt: skip
        self.skip = nn.Identity() if cin == cout else conv_bn(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


def residuals(features: int, count: int) -> nn.Sequential:
    return nn.Sequential(*[Residual(features, features) for _ in range(count)])


class Hourglass(nn.Module):
    """Newell et al.'s hourglass: recursive pool / process / upsample with skip branches."""

    def __init__(self, depth: int, features: int, modules: int):
        super().__init__()
        self.skip = residuals(features, modules)
        self.down = residuals(features, modules)
        self.inner = (
            Hourglass(depth - 1, features, modules) if depth > 1 else residuals(features, modules)
        )
        self.up = residuals(features, modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.skip(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class VRN(nn.Module):
    def __init__(self, config: VRNConfig):
        super().__init__()
        self.config = config
        f, s = config.features, config.slices
        self.stem = nn.Sequential(
            conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True),  # 96 x 96
            Residual(64, 128),
            nn.MaxPool2d(2),  # 48 x 48
            Residual(128, 128),
            Residual(128, f),
        )  # fmt: skip
        self.hourglasses = nn.ModuleList(
            Hourglass(config.depth, f, config.modules) for _ in range(config.stacks)
        )
        self.features = nn.ModuleList(
            nn.Sequential(residuals(f, config.modules), conv_bn(f, f), nn.ReLU(inplace=True))
            for _ in range(config.stacks)
        )
        # Between stacks the running features are refined; with intermediate supervision
        # each stack also predicts a volume that is fed back in (Newell et al.).
        self.merge = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(config.stacks - 1))
        n_heads = config.stacks if config.intermediate_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(f, s, 1) for _ in range(n_heads))
        self.head_merge = nn.ModuleList(nn.Conv2d(s, f, 1) for _ in range(n_heads - 1))
        self.landmark_head = None
        if config.landmarks:
            # zero: uniform maps at first, so a new head added to trained features sends
            # them no noise until it has learned something
            self.landmark_head = nn.Conv2d(f, config.landmarks, 1)
            nn.init.zeros_(self.landmark_head.weight)
            nn.init.zeros_(self.landmark_head.bias)

    def forward_logits(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Logits of each supervised stack at 48 x 48 (the last one is the answer)."""
        return self.forward_heads(image)[0]

    def forward_heads(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Every supervised stack's volume logits and the landmark heatmap logits
        (N, landmarks, 48, 48), or None without a landmark head."""
        x = self.stem(image * 2.0 - 1.0)
        outputs = []
        stages = zip(self.hourglasses, self.features, strict=True)
        for i, (hourglass, features) in enumerate(stages):
            y = features(hourglass(x))
            last = i == self.config.stacks - 1
            if self.config.intermediate_supervision or last:
                outputs.append(self.heads[len(outputs)](y))
            if not last:
                x = x + self.merge[i](y)
                if self.config.intermediate_supervision:
                    x = x + self.head_merge[i](outputs[-1])
        heatmaps = self.landmark_head(y) if self.landmark_head is not None else None
        return outputs, heatmaps

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Volume logits, (N, slices, input_size, input_size)."""
        # in plain (N, slices, y, x) layout even for channels-last inputs (the service's): the
        # head pose's pooling and the marching cubes are ~20 ms faster each on it, and making
        # it plain here, at 48 x 48, costs 5 ms where the full volume's transpose costs 25
        logits = self.forward_logits(image)[-1].contiguous()
        return F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)


# iBUG-68 point i of a face seen in a mirror is point IBUG68_MIRROR[i] of the mirrored face
# (the jaw, brows, nostrils, eyes and lips swap sides; the midline points stay)
IBUG68_MIRROR = (
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)  # fmt: skip


def heatmap_points(heatmaps: torch.Tensor, input_size: int = 192) -> torch.Tensor:
    """(N, K, h, w) heatmap logits -> (N, K, 2) expected (x, y) in input pixels: the mean of
    each softmax-normalised map (Sun et al.'s integral regression)."""
    n, k, h, w = heatmaps.shape
    probability = heatmaps.float().flatten(2).softmax(-1).view(n, k, h, w)
    cell = input_size / w  # pixels per heatmap cell; cell i's centre is pixel cell*(i+.5)-.5
    xs = (torch.arange(w, device=heatmaps.device) + 0.5) * cell - 0.5
    ys = (torch.arange(h, device=heatmaps.device) + 0.5) * cell - 0.5
    x = (probability.sum(2) * xs).sum(-1)
    y = (probability.sum(3) * ys).sum(-1)
    return torch.stack([x, y], -1)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every Conv2d -> BatchNorm2d pair into one Conv2d (inference only)."""
    for module in model.modules():
        children = list(module.named_children())
        for (name, child), (next_name, after) in zip(children, children[1:], strict=False):
            if isinstance(child, nn.Conv2d) and isinstance(after, nn.BatchNorm2d):
                setattr(module, name, torch.nn.utils.fusion.fuse_conv_bn_eval(child, after))
                setattr(module, next_name, nn.Identity())
    return model
