"""Random draws of identity, expression, pose and camera for a batch (CPU generator)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ShapePrior:
    identity_sigma: float = 1.15  # a little wider than N(0, 1) for diversity
    expression_probability: float = 0.08  # chance of each blendshape being active
    jaw_open_probability: float = 0.25  # jawOpen gets its own, larger chance


@dataclass(frozen=True)
class PosePrior:
    yaw_max: float = 90.0
    large_yaw_fraction: float = 0.1  # drawn from [large_yaw_from, yaw_max] instead
    large_yaw_from: float = 50.0
    pitch_common: float = 25.0  # most pitches are within this
    pitch_max: float = 45.0
    pitch_wide_fraction: float = 0.2
    roll_common: float = 12.0
    roll_max: float = 30.0
    roll_wide_fraction: float = 0.3
    perspective_fraction: float = 0.35
    camera_distance_cm: tuple[float, float] = (35.0, 150.0)


def uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def mixture(g: torch.Generator, n: int, common: float, wide: float, wide_p: float):
    """Symmetric angles, uniform within ±common, or ±wide with probability wide_p."""
    limit = torch.where(torch.rand(n, generator=g) < wide_p, wide, common)
    return (2 * torch.rand(n, generator=g) - 1) * limit


def sample_poses(
    g: torch.Generator,
    n: int,
    prior: PosePrior,
    yaw_buckets: list[tuple[float, float]] | None,
    first: int = 0,
) -> dict[str, torch.Tensor]:
    """Yaw, pitch, roll in degrees and camera distance (inf = weak perspective).

    With `yaw_buckets`, |yaw| of sample `first + i` (its index in the whole set) cycles
    through the buckets, so any prefix of the set is balanced whatever the batch size."""
    if yaw_buckets:
        k = len(yaw_buckets)
        bounds = torch.tensor([yaw_buckets[(first + i) % k] for i in range(n)])
        magnitude = bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * torch.rand(n, generator=g)
    else:
        large = torch.rand(n, generator=g) < prior.large_yaw_fraction
        magnitude = torch.where(
            large,
            uniform(g, n, prior.large_yaw_from, prior.yaw_max),
            uniform(g, n, 0.0, prior.yaw_max),
        )
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    near, far = prior.camera_distance_cm
    distance = torch.where(
        torch.rand(n, generator=g) < prior.perspective_fraction,
        uniform(g, n, near, far),
        torch.tensor(float("inf")),
    )
    return {
        "yaw": sign * magnitude,
        "pitch": mixture(g, n, prior.pitch_common, prior.pitch_max, prior.pitch_wide_fraction),
        "roll": mixture(g, n, prior.roll_common, prior.roll_max, prior.roll_wide_fraction),
        "camera_distance": distance,
    }


def sample_shape_weights(
    g: torch.Generator, n: int, identities: int, expression_names: list[str], prior: ShapePrior
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, identities) Gaussian identity weights and (n, E) sparse expressions in [0, 1]."""
    identity = torch.randn(n, identities, generator=g) * prior.identity_sigma
    active = torch.rand(n, len(expression_names), generator=g) < prior.expression_probability
    jaw = expression_names.index("jawOpen")
    active[:, jaw] = torch.rand(n, generator=g) < prior.jaw_open_probability
    expression = torch.rand(n, len(expression_names), generator=g) * active
    return identity, expression
