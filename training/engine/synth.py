"""SyntheticFaces: batches of (image, front/back depth of the head) drawn on the fly.

A batch is a pure function of (seed, batch index), so training is reproducible and
resumable, and the held-out set is just another seed. Everything runs in torch on the
engine's device; random numbers come from a CPU generator so that CPU and CUDA draw the
same faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.engine import appearance, augment
from training.engine.appearance import AppearancePrior
from training.engine.facemodel import IBUG68_MIRROR, FaceModel, load_face_model
from training.engine.geometry import rotation_matrices, vertex_normals
from training.engine.photos import PhotoBank
from training.engine.raster import Raster, rasterize
from training.engine.sampling import PosePrior, ShapePrior, sample_poses, sample_shape_weights

try:  # the framing shared with the service (DEVELOPERS.md, "Framing")
    from facerecon.crop import FRAMING

    SIDE_OVER_FACE = float(FRAMING.side_over_face)
except ImportError:  # crop.py not there yet
    SIDE_OVER_FACE = 1.6

SIZE = 192
SLICES = 200
FRONT_LIMIT = SLICES // 2 - 3  # the nearest surface stays inside the volume


@dataclass(frozen=True)
class EngineConfig:
    shape: ShapePrior = field(default_factory=ShapePrior)
    pose: PosePrior = field(default_factory=PosePrior)
    appearance: AppearancePrior = field(default_factory=AppearancePrior)
    side_over_face: float = SIDE_OVER_FACE
    scale_jitter: tuple[float, float] = (0.85, 1.15)
    shift_pixels: float = 15.0
    flip_probability: float = 0.5

    @classmethod
    def from_dict(cls, d: dict) -> EngineConfig:
        d = dict(d)
        parts = {"shape": ShapePrior, "pose": PosePrior, "appearance": AppearancePrior}
        for name, kind in parts.items():
            if name in d:
                values = {k: tuple(v) if isinstance(v, list) else v for k, v in d[name].items()}
                d[name] = kind(**values)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class Batch:
    image: torch.Tensor  # (B, 3, 192, 192) float in [0, 1]
    front: torch.Tensor  # (B, 192, 192) crop z of the nearest head surface (-inf: none)
    back: torch.Tensor  # (B, 192, 192) crop z of the farthest head surface (+inf: none)
    landmarks: torch.Tensor  # (B, 68, 3) crop-space (x, y down, z) landmarks
    # (B, 68, 2) crop-space (x, y) of the iBUG-68 points as the image shows them (mirrored
    # samples renumbered): the landmark head's targets
    points68: torch.Tensor
    face_vertices: torch.Tensor  # (B, Vf, 3) crop-space face-region vertices
    yaw: torch.Tensor  # (B,) degrees, as seen in the (possibly flipped) image
    pitch: torch.Tensor
    roll: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.front >= self.back


class SyntheticFaces:
    def __init__(
        self,
        model: FaceModel,
        photos: PhotoBank,
        config: EngineConfig | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        yaw_buckets: list[tuple[float, float]] | None = None,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.photos = photos
        self.config = config or EngineConfig()
        self.seed = seed
        self.yaw_buckets = yaw_buckets

    @classmethod
    def from_shared(
        cls,
        shared: str | Path,
        cache_dir: str | Path,
        photo_split: str = "train",
        photo_limit: int | None = None,
        **kwargs,
    ) -> SyntheticFaces:
        """Build from the shared data folder (facemodel/, realfaces/, models/yunet/)."""
        shared = Path(shared)
        photos = PhotoBank.from_directory(
            shared / "realfaces/utkface/crop_part1",
            shared / "models/yunet/yunet_n_dynamic.onnx",
            cache_dir, photo_split, photo_limit,
        )  # fmt: skip
        return cls(load_face_model(shared / "facemodel"), photos, **kwargs)

    def batch(self, index: int, size: int) -> Batch:
        """Batch number `index` of `size` samples; the same (seed, index, size) -> same batch."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        model = self.model
        identity, expression = sample_shape_weights(
            g, size, model.identity_basis.shape[0], model.expression_names, self.config.shape
        )
        pose = sample_poses(g, size, self.config.pose, self.yaw_buckets, first=index * size)
        return self.render(g, identity, expression, pose)

    def pose_sweep(self, person: int, yaws: Sequence[float]) -> list[Batch]:
        """Synthetic person number `person` (a random identity, neutral expression) seen at
        each yaw (pitch and roll 0, weak perspective), one single-sample Batch per yaw. The
        photo texture, light, background, framing jitter and image degradations are drawn
        once, so only the pose differs between the images (a flip mirrors them all)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + person)
        model = self.model
        identity, _ = sample_shape_weights(
            g, 1, model.identity_basis.shape[0], model.expression_names, self.config.shape
        )
        expression = torch.zeros(1, model.expression_basis.shape[0])
        state = g.get_state()
        sweep = []
        for yaw in yaws:
            g.set_state(state)
            pose = {
                "yaw": torch.tensor([float(yaw)]),
                "pitch": torch.zeros(1),
                "roll": torch.zeros(1),
                "camera_distance": torch.tensor([float("inf")]),
            }
            sweep.append(self.render(g, identity, expression, pose))
        return sweep

    def render(
        self,
        g: torch.Generator,
        identity: torch.Tensor,
        expression: torch.Tensor,
        pose: dict[str, torch.Tensor],
    ) -> Batch:
        """Heads of these shape weights at these poses (`sample_poses`' keys); `g` draws
        everything else: framing jitter, appearance, degradations and flips."""
        cfg, model, device = self.config, self.model, self.device
        size = identity.shape[0]
        frontal = model.shapes(identity.to(device), expression.to(device))
        rotation = rotation_matrices(pose["yaw"], pose["pitch"], pose["roll"]).to(device)
        posed = frontal @ rotation.transpose(1, 2)  # camera frame, y up

        # Projection: weak perspective, or a pinhole at a random distance from the head.
        distance = pose["camera_distance"].to(device)[:, None]
        factor = torch.where(distance.isinf(), 1.0, distance / (distance - posed[..., 2]))
        plane = torch.stack([posed[..., 0] * factor, -posed[..., 1] * factor], -1)  # y down

        # Framing (DEVELOPERS.md), then VRN's scale and translation jitter.
        lm = plane[:, model.landmarks68]
        lo, hi = lm.amin(1), lm.amax(1)
        jitter_lo, jitter_hi = cfg.scale_jitter
        jitter = jitter_lo + (jitter_hi - jitter_lo) * torch.rand(size, generator=g)
        side = cfg.side_over_face * (hi - lo).amax(-1) * jitter.to(device)
        scale = SIZE / side  # crop pixels per cm
        shift = cfg.shift_pixels * (2 * torch.rand(size, 2, generator=g) - 1)
        xy = (plane - (lo + hi)[:, None] / 2) * scale[:, None, None] + (SIZE / 2 - 0.5)
        xy = xy + shift.to(device)[:, None]
        z = posed[..., 2] * scale[:, None]
        z = z + depth_offset(xy, z)[:, None]
        vertices = torch.cat([xy, z[..., None]], -1)

        raster = rasterize(vertices, model.triangles, SIZE)
        image = self.paint(g, raster, frontal, posed, vertices)

        flip = (torch.rand(size, generator=g) < cfg.flip_probability).to(device)
        points = vertices[:, model.annotated68, :2]
        return flipped_batch(model, image, raster, vertices, pose, flip, points)

    def paint(
        self,
        g: torch.Generator,
        raster: Raster,
        frontal: torch.Tensor,
        posed: torch.Tensor,
        vertices: torch.Tensor,
    ) -> torch.Tensor:
        """Texture, relight and composite the rasterised heads; then augment the image.

        `frontal` (cm, unposed) places the photo texture, `posed` (cm, camera frame) gives
        the normals for relighting, `vertices` (crop pixels) place occluders on the face.
        """
        model, prior, device = self.model, self.config.appearance, self.device
        n = frontal.shape[0]
        picks = torch.randint(len(self.photos), (2 * n,), generator=g).tolist()
        photos = self.photos.load(picks).to(device)
        texture_photos, other_photos = photos[:n], photos[n:]
        points = self.photos.points[picks[:n]].to(device)

        frontal_normals = vertex_normals(frontal, model.triangles)
        attributes = appearance.vertex_attributes(
            g, frontal, frontal_normals, texture_photos, points, model, prior
        )
        posed_normals = vertex_normals(posed, model.triangles)
        pixels = appearance.interpolate(
            raster, model.triangles, torch.cat([attributes, posed_normals], -1)
        )
        grid, weight, fallback, normals = pixels.split([2, 1, 3, 3], dim=1)
        sampled = torch.nn.functional.grid_sample(
            texture_photos, grid.permute(0, 2, 3, 1), align_corners=False
        )
        albedo = sampled * weight + fallback * (1 - weight)
        face = appearance.shade(g, albedo, normals, prior).clamp(0, 1)
        background = appearance.backgrounds(g, other_photos, SIZE, prior)
        image = torch.where(raster.mask[:, None], face, background)

        skin = appearance.skin_tone(texture_photos, points)
        textures = appearance.backgrounds(g, other_photos.flip(0), SIZE, prior)
        image = augment.occlude(g, image, textures, vertices[:, model.landmarks68, :2], skin, prior)
        return augment.degrade(g, image, prior)


def flipped_batch(
    model: FaceModel,
    image: torch.Tensor,
    raster: Raster,
    vertices: torch.Tensor,
    pose: dict[str, torch.Tensor],
    flip: torch.Tensor,
    points: torch.Tensor,
) -> Batch:
    """The Batch of rendered heads (crop-space `vertices`, their `raster`; `points`: their
    (B, 68, 2) crop-space iBUG-68 points), each sample where `flip` is set mirrored left to
    right: image, depth maps, vertices, points (renumbered) and yaw/roll."""
    front = torch.where(raster.mask, raster.front, float("-inf"))
    back = torch.where(raster.mask, raster.back, float("inf"))
    image = torch.where(flip[:, None, None, None], image.flip(-1), image)
    front = torch.where(flip[:, None, None], front.flip(-1), front)
    back = torch.where(flip[:, None, None], back.flip(-1), back)
    mirrored = vertices.clone()
    mirrored[..., 0] = SIZE - 1 - mirrored[..., 0]
    vertices = torch.where(flip[:, None, None], mirrored, vertices)
    mirrored_points = points[:, IBUG68_MIRROR].clone()
    mirrored_points[..., 0] = SIZE - 1 - mirrored_points[..., 0]
    points = torch.where(flip[:, None, None], mirrored_points, points)
    sign = torch.where(flip.cpu(), -1.0, 1.0)
    return Batch(
        image=image.contiguous(),
        front=front.contiguous(),
        back=back.contiguous(),
        landmarks=vertices[:, model.landmarks68],
        points68=points.contiguous(),
        face_vertices=vertices[:, model.face_vertices],
        yaw=pose["yaw"] * sign,
        pitch=pose["pitch"],
        roll=pose["roll"] * sign,
    )


def depth_offset(xy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-sample z shift centring the head's depth range (over the crop) in the volume.

    If the head is deeper than the volume the front is kept and the back is cut off.
    """
    in_crop = ((xy >= -0.5) & (xy <= SIZE - 0.5)).all(-1)
    far = torch.tensor(float("inf"), device=z.device)
    z_max = torch.where(in_crop, z, -far).amax(1)
    z_min = torch.where(in_crop, z, far).amin(1)
    return torch.minimum(-(z_max + z_min) / 2, FRONT_LIMIT - z_max)
