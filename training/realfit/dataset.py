"""Training batches from the fitted real photos, and real + synthetic mixes.

`RealFaces(...).batch(index, size)` has the synthetic engine's signature and returns its
`Batch`, so training mixes both without caring which is which. Only training photos are
ever drawn (CFP people 001-400, 300-W helen_train and afw, less the validation split);
held-out photos are refused.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from facerecon.pose import pose_from_rotation
from training.engine.facemodel import FaceModel
from training.engine.synth import Batch
from training.realfit.annotations import is_validation
from training.realfit.correspondence import mirror_vertices
from training.realfit.profiling import profile_photo, turn
from training.realfit.targets import make_batch, posed_vertices

# Fits whose mean reprojection error exceeds this fraction of the landmark box are left
# out (set on the held-in fits' distribution: about their 98th percentile).
MAX_FIT_ERROR = 0.06


class RealFaces:
    def __init__(
        self,
        model: FaceModel,
        fits_path: str | Path,
        shared: str | Path,
        seed: int = 0,
        subsets: tuple[str, ...] = ("cfp", "helen_train", "afw"),
        limit: int | None = None,
        profiling: float = 0.0,
        validation: bool = False,
    ):
        """`profiling`: the chance that a near-frontal sample (|yaw| < 30) is drawn turned to
        45-90 degrees (`training.realfit.profiling`) instead. `validation`: also draw the
        validation photos (`annotations.is_validation`), which training leaves out."""
        cache = torch.load(fits_path, map_location="cpu", weights_only=False)
        photos, fits = cache["photos"], cache["fits"]
        points = [np.asarray(p["points"]) for p in photos]
        box = torch.tensor([np.sqrt(np.prod(p.max(0) - p.min(0))) for p in points])
        error = fits["residual"].nanmean(1) / box
        plausible = fits["rotation"][:, 2, 2] > -0.09  # not turned away (|yaw| < 95)
        keep = [i for i, p in enumerate(photos)
                if not p["held_out"] and p["subset"] in subsets and error[i] <= MAX_FIT_ERROR
                and plausible[i] and (validation or not is_validation(p["path"], p["subset"],
                                                                      p["person"]))]  # fmt: skip
        keep = keep[:limit] if limit else keep
        self.model = model
        self.seed = seed
        self.profiling = profiling
        self.mirror = mirror_vertices(model.neutral.cpu())
        self.paths = [photos[i]["path"] for i in keep]
        # the landmark head learns an annotator's 68 points where a person marked them
        # (300-W), else the fitted head's (CFP marks 30 points, half of them per profile)
        self.annotated = torch.full((len(keep), 68, 2), float("nan"))
        for row, i in enumerate(keep):
            if photos[i]["scheme"] == "ibug68":
                self.annotated[row] = torch.as_tensor(points[i], dtype=torch.float32)
        self.fits = {k: v[keep] for k, v in fits.items() if isinstance(v, torch.Tensor)}
        self.images = [_read_rgb(Path(shared) / path) for path in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, index: int, size: int) -> Batch:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        picks = torch.randint(len(self), (size,), generator=g)
        f = {k: v[picks] for k, v in self.fits.items()}
        vertices = posed_vertices(self.model, f["identity"], f["expression"], f["rotation"],
                                  f["scale"], f["translation"])  # fmt: skip
        images = [self.images[i] for i in picks.tolist()]
        annotated = self.annotated[picks]
        chance, side, extent = torch.rand(3, size, generator=g)
        target = torch.where(side < 0.5, -1.0, 1.0) * (45 + 45 * extent)  # new yaw
        for k in torch.nonzero((chance < self.profiling) & (f["yaw"].abs() < 30)).flatten():
            k = int(k)
            delta = float(target[k] - f["yaw"][k])
            turned, rotation, shift = turn(
                vertices[k], f["rotation"][k], f["translation"][k], delta
            )
            images[k] = profile_photo(self.model, images[k], vertices[k], turned, self.mirror)
            vertices[k] = turned
            annotated[k] = float("nan")  # the annotator's points are of the unturned head
            pose = pose_from_rotation(rotation.numpy())
            f["yaw"][k], f["pitch"][k], f["roll"][k] = pose.yaw, pose.pitch, pose.roll
        fitted = vertices[:, self.model.annotated68, :2]
        points = torch.where(annotated.isnan(), fitted, annotated)
        return make_batch(self.model, images, vertices, f["yaw"], f["pitch"], f["roll"], g,
                          points=points)  # fmt: skip


class MixedFaces:
    """`real_share` of every batch from `real`, the rest from `synthetic` (same indices)."""

    def __init__(self, synthetic, real: RealFaces, real_share: float):
        self.synthetic, self.real, self.real_share = synthetic, real, real_share

    def batch(self, index: int, size: int) -> Batch:
        n_real = round(size * self.real_share)
        parts = []
        if n_real:
            parts.append(self.real.batch(index, n_real))
        if size - n_real:
            parts.append(self.synthetic.batch(index, size - n_real))
        if len(parts) == 1:
            return parts[0]
        a, b = parts
        return Batch(**{k: torch.cat([getattr(a, k), getattr(b, k)]) for k in vars(a)})


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
