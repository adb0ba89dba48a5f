"""Fitted photos -> training samples in the synthetic engine's exact form.

The fitted head is posed in its photo's pixels, framed like every engine sample (the
68-landmark box, `SIDE_OVER_FACE`, the same scale and shift jitter), rasterised to its
front/back depth by the engine's rasteriser, and the photo is warped by the same
similarity (black outside the photo, as `facerecon.crop` does). Drawn on the fly, so every
epoch sees new framings and flips of the ~7,000 training photos.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from training.engine.facemodel import FaceModel
from training.engine.raster import rasterize
from training.engine.synth import SIDE_OVER_FACE, SIZE, Batch, depth_offset, flipped_batch


def posed_vertices(
    model: FaceModel,
    identity: torch.Tensor,
    expression: torch.Tensor,
    rotation: torch.Tensor,
    scale: torch.Tensor,
    translation: torch.Tensor,
) -> torch.Tensor:
    """(B, V, 3) head vertices in photo pixels: x right, y down, z towards the camera."""
    cam = model.shapes(identity, expression) @ rotation.transpose(1, 2)
    s = scale[:, None]
    xy = torch.stack([cam[..., 0] * s, -cam[..., 1] * s], -1) + translation[:, None]
    return torch.cat([xy, (cam[..., 2] * s)[..., None]], -1)


def make_batch(
    model: FaceModel,
    photos: list[np.ndarray],
    vertices: torch.Tensor,
    yaw: torch.Tensor,
    pitch: torch.Tensor,
    roll: torch.Tensor,
    g: torch.Generator,
    scale_jitter: tuple[float, float] = (0.85, 1.15),
    shift_pixels: float = 15.0,
    flip_probability: float = 0.5,
    points: torch.Tensor | None = None,
) -> Batch:
    """Crops of `photos` (RGB uint8) and targets of their posed heads (`posed_vertices`).
    `points`: (B, 68, 2) photo-pixel iBUG-68 points for the landmark targets (e.g. an
    annotator's); by default the fitted heads' (`FaceModel.annotated68`)."""
    size = len(photos)
    lm = vertices[:, model.landmarks68, :2]
    lo, hi = lm.amin(1), lm.amax(1)
    jitter = scale_jitter[0] + (scale_jitter[1] - scale_jitter[0]) * torch.rand(size, generator=g)
    scale = SIZE / (SIDE_OVER_FACE * (hi - lo).amax(-1) * jitter)
    shift = shift_pixels * (2 * torch.rand(size, 2, generator=g) - 1)
    offset = (SIZE / 2 - 0.5) + shift - (lo + hi) / 2 * scale[:, None]  # crop = scale*x + offset
    xy = vertices[..., :2] * scale[:, None, None] + offset[:, None]
    if points is None:
        points = vertices[:, model.annotated68, :2]
    points = points * scale[:, None, None] + offset[:, None]
    z = vertices[..., 2] * scale[:, None]
    z = z + depth_offset(xy, z)[:, None]
    crop_vertices = torch.cat([xy, z[..., None]], -1)
    raster = rasterize(crop_vertices, model.triangles, SIZE)

    images = []
    for photo, s, (tx, ty) in zip(photos, scale.tolist(), offset.tolist(), strict=True):
        matrix = np.array([[s, 0, tx], [0, s, ty]], np.float32)
        interpolation = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        images.append(
            cv2.warpAffine(
                photo,
                matrix,
                (SIZE, SIZE),
                flags=interpolation,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(0, 0, 0),
            )
        )
    image = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255

    flip = torch.rand(size, generator=g) < flip_probability
    pose = {"yaw": yaw, "pitch": pitch, "roll": roll}
    return flipped_batch(model, image, raster, crop_vertices, pose, flip, points)
