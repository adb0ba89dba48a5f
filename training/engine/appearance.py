"""Colour for synthetic heads: real photo textures, relighting, backgrounds, occluders.

The model has no albedo, so each head borrows a real UTKFace photo: the frontal shape's
eyes, nose and mouth corners are fitted (2D similarity) to the photo's five landmarks,
which gives every frontally visible vertex a position in the photo. Vertices the photo
cannot see (sides and back of the head, inside of the mouth) fall back to the photo's
skin tone, a random hair colour on the scalp, or a dark mouth colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.engine.facemodel import SOLID_REGIONS, FaceModel
from training.engine.geometry import apply_affine_2d, fit_similarity_2d
from training.engine.raster import Raster, rasterize

HAIR_COLOURS = torch.tensor(
    [
        [0.04, 0.035, 0.03],  # black
        [0.16, 0.10, 0.06],  # dark brown
        [0.32, 0.21, 0.12],  # brown
        [0.62, 0.50, 0.32],  # blond
        [0.52, 0.50, 0.48],  # grey
        [0.40, 0.17, 0.08],  # red
    ]
)
MOUTH_COLOUR = torch.tensor([0.30, 0.08, 0.08])
VISIBILITY_SIZE = 112  # frontal visibility is tested at this resolution
VISIBILITY_CM = 40.0  # over this field of view, in cm


@dataclass(frozen=True)
class AppearancePrior:
    hair_probability: float = 0.75
    relight_probability: float = 0.8
    photo_background_probability: float = 0.4
    occluder_probability: float = 0.35
    fringe_probability: float = 0.15
    blur_probability: float = 0.3
    downscale_probability: float = 0.2
    noise_probability: float = 0.5
    grayscale_probability: float = 0.08
    jpeg_probability: float = 0.3


def smoothstep(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    t = ((x - low) / (high - low)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def model_five_points(frontal: torch.Tensor, model: FaceModel) -> torch.Tensor:
    """(B, 5, 2) image-plane (x, -y) positions matching YuNet's landmark order."""
    lm = frontal[:, model.landmarks68]
    points = torch.stack(
        [lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48], lm[:, 54]], 1
    )
    return torch.stack([points[..., 0], -points[..., 1]], -1)


def frontal_visibility(frontal: torch.Tensor, model: FaceModel) -> torch.Tensor:
    """(B, V) in [0, 1]: how visible each vertex is in a frontal view of its own shape."""
    scale = VISIBILITY_SIZE / VISIBILITY_CM
    centre = VISIBILITY_SIZE / 2 - 0.5
    screen = torch.stack(
        [centre + frontal[..., 0] * scale, centre - (frontal[..., 1] + 2) * scale,
         frontal[..., 2] * scale], -1)  # fmt: skip
    raster = rasterize(screen, model.triangles, VISIBILITY_SIZE)
    px = screen[..., 0].round().long().clamp(0, VISIBILITY_SIZE - 1)
    py = screen[..., 1].round().long().clamp(0, VISIBILITY_SIZE - 1)
    batch = torch.arange(frontal.shape[0], device=frontal.device)[:, None]
    gap_cm = (raster.front[batch, py, px] - screen[..., 2]) / scale
    return 1 - smoothstep(gap_cm, 0.6, 1.2)


def vertex_attributes(
    g: torch.Generator,
    frontal: torch.Tensor,
    frontal_normals: torch.Tensor,
    photos: torch.Tensor,
    photo_points: torch.Tensor,
    model: FaceModel,
    prior: AppearancePrior,
) -> torch.Tensor:
    """(B, V, 6): photo grid coordinates (2), photo weight (1), fallback colour (3)."""
    batch, device = frontal.shape[0], frontal.device
    to_photo = fit_similarity_2d(model_five_points(frontal, model), photo_points)
    plane = torch.stack([frontal[..., 0], -frontal[..., 1]], -1)
    uv = apply_affine_2d(to_photo, plane)  # photo pixels
    size = photos.shape[-1]
    grid = (uv + 0.5) / size * 2 - 1
    inside = smoothstep(size / 2 - (uv - size / 2).abs(), 2.0, 10.0).prod(-1)
    slant = smoothstep(frontal_normals[..., 2].abs(), 0.15, 0.45)
    weight = frontal_visibility(frontal, model) * slant * inside

    skin = skin_tone(photos, photo_points)  # (B, 3)
    hair = HAIR_COLOURS[torch.randint(len(HAIR_COLOURS), (batch,), generator=g)]
    hair = (hair * (0.7 + 0.5 * torch.rand(batch, 1, generator=g))).to(device)
    has_hair = (torch.rand(batch, generator=g) < prior.hair_probability).to(device)
    # Hair line: a few cm above the eyes on the front, lower behind the ears.
    eye_y = frontal[:, model.landmarks68[36:48], 1].mean(1, keepdim=True)
    hair_from = eye_y + (2.5 + 3.5 * torch.rand(batch, 1, generator=g)).to(device)
    y, z = frontal[..., 1], frontal[..., 2]
    scalp = (
        torch.maximum(
            smoothstep(y - hair_from, 0.0, 1.5),
            smoothstep(-z, 0.0, 3.0) * smoothstep(y - eye_y + 4, 0, 2),
        )
        * has_hair[:, None]
    )
    shade = 0.85 + 0.15 * torch.rand(batch, 1, 1, generator=g).to(device)
    fallback = skin[:, None] * shade * (1 - scalp[..., None]) + hair[:, None] * scalp[..., None]
    mouth = model.region_of_vertex == SOLID_REGIONS.index("mouth_socket")
    fallback[:, mouth] = (MOUTH_COLOUR.to(device) * skin.mean(-1, keepdim=True) * 2)[:, None]
    # Hair hides what the photo shows at the edge of its view (weight < 1) on the scalp.
    weight = weight * (1 - 0.7 * scalp * (weight < 0.99))
    return torch.cat([grid, weight[..., None], fallback], -1)


def skin_tone(photos: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, 3) median colour of both cheeks (below the eyes, above the mouth corners)."""
    eyes, mouth = points[:, 0:2], points[:, 3:5]
    cheeks = eyes + 0.55 * (mouth - eyes)  # (B, 2, 2)
    offsets = (
        torch.stack(
            torch.meshgrid(torch.linspace(-6, 6, 4), torch.linspace(-6, 6, 4), indexing="xy"), -1
        )
        .view(-1, 2)
        .to(photos.device)
    )
    samples = (cheeks[:, :, None] + offsets).view(photos.shape[0], 1, -1, 2)
    size = photos.shape[-1]
    colours = F.grid_sample(photos, (samples + 0.5) / size * 2 - 1, align_corners=False)
    return colours.squeeze(2).median(-1).values


def interpolate(raster: Raster, triangles: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per-vertex (B, V, C) values -> per-pixel (B, C, H, W), zero where empty."""
    b, y, x = torch.nonzero(raster.mask, as_tuple=True)
    corners = triangles[raster.triangle[b, y, x]]  # (N, 3)
    pixel = (raster.barycentric[b, y, x, :, None] * values[b[:, None], corners]).sum(1)
    out = values.new_zeros(raster.mask.shape + (values.shape[-1],))
    out[b, y, x] = pixel
    return out.permute(0, 3, 1, 2)


def shade(
    g: torch.Generator, albedo: torch.Tensor, normals: torch.Tensor, prior: AppearancePrior
) -> torch.Tensor:
    """Relight (B, 3, H, W) albedo with ambient + Lambert + Blinn specular (camera frame)."""
    batch, device = albedo.shape[0], albedo.device
    n = F.normalize(normals, dim=1)
    n = n * torch.where(n[:, 2:3] < 0, -1.0, 1.0)  # visible surfaces face the camera
    light = torch.randn(batch, 3, generator=g)
    light[:, 2] = light[:, 2].abs() + 0.6
    light = F.normalize(light, dim=1).to(device)
    ambient = (0.45 + 0.4 * torch.rand(batch, generator=g)).to(device)
    diffuse = 1 - ambient + 0.2 * torch.rand(batch, generator=g).to(device)
    lambert = (n * light[:, :, None, None]).sum(1).clamp_min(0)
    shading = (ambient[:, None, None] + diffuse[:, None, None] * lambert) / (
        ambient + 0.8 * diffuse
    )[:, None, None]
    half = F.normalize(light + torch.tensor([0.0, 0.0, 1.0], device=device), dim=1)
    gloss = (8 + 32 * torch.rand(batch, generator=g)).to(device)[:, None, None]
    strength = (0.25 * torch.rand(batch, generator=g)).to(device)[:, None, None]
    specular = strength * (n * half[:, :, None, None]).sum(1).clamp_min(0) ** gloss
    relit = albedo * shading[:, None] + specular[:, None]
    keep = (torch.rand(batch, generator=g) >= prior.relight_probability).to(device)
    return torch.where(keep[:, None, None, None], albedo, relit)


def backgrounds(
    g: torch.Generator, photos: torch.Tensor, size: int, prior: AppearancePrior
) -> torch.Tensor:
    """Blurred random crops of other photos, or smooth gradients with low-frequency noise."""
    batch, device = photos.shape[0], photos.device
    zoom = 0.3 + 0.7 * torch.rand(batch, generator=g)
    shift = (1 - zoom)[:, None] * (2 * torch.rand(batch, 2, generator=g) - 1)
    flip = torch.where(torch.rand(batch, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = zoom * flip, zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(device), [batch, 3, size, size], align_corners=False)
    photo = gaussian_blur(F.grid_sample(photos, grid, align_corners=False),
                          (1.5 + 3.5 * torch.rand(batch, generator=g)).to(device))  # fmt: skip

    colours = torch.rand(batch, 2, 3, 1, 1, generator=g).to(device)
    direction = F.normalize(torch.randn(batch, 2, generator=g), dim=1).to(device)
    ramp = torch.linspace(-1, 1, size, device=device)
    t = (direction[:, 0, None, None] * ramp[None, None] + direction[:, 1, None, None]
         * ramp[None, :, None]) * 0.5 + 0.5  # fmt: skip
    gradient = colours[:, 0] + (colours[:, 1] - colours[:, 0]) * t[:, None]
    noise = torch.randn(batch, 3, 6, 6, generator=g).to(device) * 0.12
    gradient = gradient + F.interpolate(noise, size=(size, size), mode="bicubic")

    use_photo = torch.rand(batch, generator=g).to(device) < prior.photo_background_probability
    return torch.where(use_photo[:, None, None, None], photo, gradient).clamp(0, 1)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (pixels; 0 keeps the image)."""
    batch, channels, h, w = images.shape
    radius = int(torch.clamp(sigma.max() * 3, min=1).ceil())
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)
    flat = images.reshape(1, batch * channels, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=batch * channels)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=batch * channels)
    return flat.view(batch, channels, h, w)
