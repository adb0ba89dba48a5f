"""Head-pose training data: engine heads without appearance, and volumes made to look predicted.

`GeometryOnlyFaces` draws the engine's shapes, poses and framing but skips painting (the pose
network reads volumes, not photos): ~0.1 s per head on one CPU thread instead of ~0.25 s.
Heads are drawn once into shards of depth maps (`draw_shard`) and reused every epoch with
fresh augmentation (`augmented_volumes`), which turns the exact ground-truth volume into
something like a VRN prediction: soft, blurred, noisy, fattened or thinned, the back cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from training.engine.facemodel import load_face_model
from training.engine.geometry import rotation_matrices
from training.engine.synth import EngineConfig, SyntheticFaces
from training.engine.voxelize import pooled_volume

SHARD = 200  # heads per cache file


class GeometryOnlyFaces(SyntheticFaces):
    """`SyntheticFaces` with a blank image: shapes, poses, framing and depth maps only."""

    def paint(self, g, raster, frontal, posed, vertices) -> torch.Tensor:  # noqa: ARG002
        return torch.zeros(1, 3, 1, 1, device=self.device).expand(
            len(frontal), 3, *raster.mask.shape[1:]
        )

    @classmethod
    def from_shared_model(
        cls, shared: str | Path, config: EngineConfig, seed: int
    ) -> GeometryOnlyFaces:
        return cls(load_face_model(Path(shared) / "facemodel"), None, config=config, seed=seed)


def draw_shard(engine: SyntheticFaces, shard: int, batch_size: int = 25) -> dict[str, torch.Tensor]:
    """Heads `shard * SHARD ...` of the engine: fp16 front/back depth maps and the rotation."""
    parts = []
    first = shard * (SHARD // batch_size)
    for index in range(first, first + SHARD // batch_size):
        b = engine.batch(index, batch_size)
        parts.append({
            "front": b.front.half(), "back": b.back.half(),
            "rotation": rotation_matrices(b.yaw, b.pitch, b.roll),
        })  # fmt: skip
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def load_shards(folder: Path) -> dict[str, torch.Tensor]:
    shards = [torch.load(p, weights_only=True) for p in sorted(folder.glob("shard-*.pt"))]
    if not shards:
        raise FileNotFoundError(f"no shards in {folder}")
    return {k: torch.cat([s[k] for s in shards]) for k in shards[0]}


@dataclass(frozen=True)
class Augment:
    """Ranges of the corruptions that make a ground-truth volume look like a prediction.

    Most act on the 192 x 192 depth maps, where they are cheap: independent per-pixel depth
    jitter becomes, after 4 x 4 pooling, a soft surface (a blur along d); a smooth depth
    error field warps the surface; max-pooling the depth maps grows or shrinks the head's
    outline."""

    thickness: float = 3.0  # front and back surfaces each move by up to this many slices
    warp: float = 6.0  # amplitude of a smooth depth error field, slices, up to
    jitter: float = 6.0  # per-pixel depth noise sigma, slices, up to (softness along d)
    outline: int = 4  # the outline grows or shrinks by up to this many pixels
    back_cut: float = 0.3  # chance that the head keeps only 60..150 slices behind its front
    vague: float = 0.7  # up to this much of a coarse (8 x 16 x 16 voxel) blur is mixed in
    noise: float = 0.1  # amplitude of blocky noise on the pooled occupancy, up to
    flip: float = 0.5


def augmented_volumes(
    front: torch.Tensor, back: torch.Tensor, rotation: torch.Tensor, aug: Augment,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Depth maps (B, 192, 192) and rotations -> corrupted pooled volumes (B, 200, 48, 48)
    and the rotations they show (horizontal flips mirror x: R -> M R M, M = diag(-1, 1, 1))."""
    n, size = len(front), front.shape[-1]
    front, back = front.float(), back.float()

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=g)

    flip = torch.rand(n, generator=g) < aug.flip
    front = torch.where(flip[:, None, None], front.flip(-1), front)
    back = torch.where(flip[:, None, None], back.flip(-1), back)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    rotation = torch.where(flip[:, None, None], mirror @ rotation @ mirror, rotation)

    radius = int(torch.randint(0, aug.outline + 1, (), generator=g))
    if radius:  # one radius per batch: grow or shrink the outline (inf-safe max pooling)
        k, grow = 2 * radius + 1, torch.rand((), generator=g) < 0.5
        sign = 1.0 if grow else -1.0
        front = sign * F.max_pool2d(sign * front[:, None], k, 1, radius)[:, 0]
        back = -sign * F.max_pool2d(-sign * back[:, None], k, 1, radius)[:, 0]

    coarse = torch.randn(n, 2, 6, 6, generator=g) * uniform(0.0, aug.warp, 1, 1, 1)
    warp = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    jitter = torch.randn(n, 2, size, size, generator=g) * uniform(0.0, aug.jitter, 1, 1, 1)
    shift = uniform(-aug.thickness, aug.thickness, 2, 1, 1)
    front = front + shift[:, 0] + warp[:, 0] + jitter[:, 0]
    back = back - shift[:, 1] + warp[:, 1] + jitter[:, 1]
    cut = torch.rand(n, generator=g) < aug.back_cut
    keep = torch.where(cut, uniform(60.0, 150.0), float("inf"))[:, None, None]
    back = torch.maximum(back, front - keep)
    volume = pooled_volume(front, back)
    # VRN's volumes are vague far from the visible surface: ~35 % of their voxels are soft
    # (0.1-0.9) against ~3 % of a ground truth's
    coarse = F.interpolate(F.avg_pool3d(volume[:, None], (8, 4, 4)), size=volume.shape[1:],
                           mode="trilinear")[:, 0]  # fmt: skip
    vague = uniform(0.0, aug.vague, 1, 1, 1)
    volume = volume.mul_(1.0 - vague).add_(coarse.mul_(vague))

    blocks = torch.randn(n, 25, 12, 12, generator=g) * uniform(0.0, aug.noise, 1, 1, 1)
    noise = blocks.repeat_interleave(8, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
    return (volume + noise).clamp_(0.0, 1.0), rotation
