"""Image-only augmentations: occluders, hair fringes, blur, resolution, noise, colour, JPEG.

None of these change the target volume: the network must see through them.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from training.engine.appearance import HAIR_COLOURS, AppearancePrior, gaussian_blur


def occlude(
    g: torch.Generator,
    images: torch.Tensor,
    textures: torch.Tensor,
    landmarks: torch.Tensor,
    skin: torch.Tensor,
    prior: AppearancePrior,
) -> torch.Tensor:
    """Paint ellipses/rectangles (plain, textured or skin-coloured 'hands') and hair fringes.

    `landmarks` (B, 68, 2) in crop pixels place the shapes on the face; `textures` are
    (B, 3, H, W) images to cut textured occluders from; `skin` (B, 3) colours the hands.
    """
    batch, _, h, w = images.shape
    device = images.device
    lo, hi = landmarks.amin(1).cpu(), landmarks.amax(1).cpu()
    size = (hi - lo).amax(-1)  # (B,)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )

    def shape_mask(centre, radii, angle, rectangle):
        c, s = angle.cos()[:, None, None], angle.sin()[:, None, None]
        dx, dy = xs - centre[:, 0, None, None], ys - centre[:, 1, None, None]
        u = (c * dx + s * dy) / radii[:, 0, None, None]
        v = (-s * dx + c * dy) / radii[:, 1, None, None]
        ellipse = u * u + v * v
        box = torch.maximum(u.abs(), v.abs())
        inside = torch.where(rectangle[:, None, None], box, ellipse)
        return (1.0 - inside).mul(4).clamp(0, 1)  # a little soft at the edge

    # Generic occluders over the face.
    active = torch.rand(batch, generator=g) < prior.occluder_probability
    centre = lo + (hi - lo) * torch.rand(batch, 2, generator=g)
    radii = size[:, None] * (0.1 + 0.3 * torch.rand(batch, 2, generator=g)) * active[:, None]
    angle = torch.rand(batch, generator=g) * torch.pi
    rectangle = torch.rand(batch, generator=g) < 0.4
    kind = torch.randint(3, (batch,), generator=g)  # 0 plain, 1 textured, 2 hand
    plain = torch.rand(batch, 3, generator=g)
    mask = shape_mask(
        centre.to(device), radii.clamp_min(1e-3).to(device), angle.to(device), rectangle.to(device)
    )
    mask = mask * active.to(device)[:, None, None]
    fill = torch.where(
        (kind == 1).to(device)[:, None, None, None],
        textures,
        torch.where((kind == 2).to(device)[:, None], skin * 0.95, plain.to(device))[
            ..., None, None
        ].expand_as(images),
    )
    images = images + (fill - images) * mask[:, None]

    # Hair fringes: a dark ellipse across the top of the forehead.
    fringe = torch.rand(batch, generator=g) < prior.fringe_probability
    top = torch.stack([(lo[:, 0] + hi[:, 0]) / 2, lo[:, 1] - 0.05 * size], -1)
    top[:, 0] += (torch.rand(batch, generator=g) - 0.5) * 0.3 * size
    radii = size[:, None] * torch.stack(
        [0.4 + 0.3 * torch.rand(batch, generator=g), 0.1 + 0.15 * torch.rand(batch, generator=g)],
        -1,
    )
    angle = (torch.rand(batch, generator=g) - 0.5) * 0.6
    colour = HAIR_COLOURS[torch.randint(len(HAIR_COLOURS), (batch,), generator=g)].to(device)
    mask = shape_mask(top.to(device), radii.to(device), angle.to(device),
                      torch.zeros(batch, dtype=torch.bool, device=device))  # fmt: skip
    mask = mask * fringe.to(device)[:, None, None]
    return images + (colour[..., None, None] - images) * mask[:, None]


def degrade(g: torch.Generator, images: torch.Tensor, prior: AppearancePrior) -> torch.Tensor:
    """Colour jitter, grayscale, blur, low resolution, noise and JPEG, each per image."""
    batch, device = images.shape[0], images.device

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(batch, generator=g) < p).to(device)[:, None, None, None]

    brightness = 0.7 + 0.6 * torch.rand(batch, 1, 1, 1, generator=g)
    contrast = 0.7 + 0.6 * torch.rand(batch, 1, 1, 1, generator=g)
    saturation = 0.6 + 0.8 * torch.rand(batch, 1, 1, 1, generator=g)
    gains = 0.9 + 0.2 * torch.rand(batch, 3, 1, 1, generator=g)
    grey = images.mean(1, keepdim=True)
    images = grey + (images - grey) * saturation.to(device)
    mean = images.mean((1, 2, 3), keepdim=True)
    images = (mean + (images - mean) * contrast.to(device)) * brightness.to(device)
    images = (images * gains.to(device)).clamp(0, 1)
    images = torch.where(
        chance(prior.grayscale_probability), images.mean(1, True).expand_as(images), images
    )

    sigma = 0.4 + 1.6 * torch.rand(batch, generator=g)
    blurred = gaussian_blur(images, sigma.to(device))
    images = torch.where(chance(prior.blur_probability), blurred, images)

    small = chance(prior.downscale_probability)
    sides = torch.randint(48, 128, (batch,), generator=g).tolist()
    size = images.shape[-1]
    for i in torch.nonzero(small.view(-1)).view(-1).tolist():
        low = F.interpolate(images[i : i + 1], size=sides[i], mode="area")
        images[i] = F.interpolate(low, size=size, mode="bilinear", align_corners=False)[0]

    noise_sigma = 0.04 * torch.rand(batch, 1, 1, 1, generator=g)
    noise = torch.randn(images.shape, generator=g) * noise_sigma
    images = torch.where(chance(prior.noise_probability), images + noise.to(device), images)
    images = images.clamp(0, 1)

    jpeg = (torch.rand(batch, generator=g) < prior.jpeg_probability).tolist()
    quality = torch.randint(25, 90, (batch,), generator=g).tolist()
    for i in [i for i in range(batch) if jpeg[i]]:
        images[i] = jpeg_roundtrip(images[i], quality[i])
    return images


def jpeg_roundtrip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode one (3, H, W) image with OpenCV's JPEG at `quality`."""
    array = (image.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return torch.from_numpy(decoded).to(image.device).permute(2, 0, 1).float() / 255.0
