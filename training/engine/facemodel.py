"""The ICT face model reduced to what the data engine renders: the outer head surface.

Shapes are `neutral + w_id @ identity_basis + w_exp @ expression_basis` in centimetres
(+x the subject's left, +y up, +z out of the face). Only the vertices of the outer head
(face, head and neck, eyeballs) and the mouth socket are kept: the eyeballs close the eye
openings and the mouth socket closes the open mouth, so that the nearest and farthest
surface along every camera ray bound the solid head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facerecon.face_model import (  # the ICT topology's parts, shared with the service
    ICT_VERTEX_RANGES,
    ICT_VERTICES,
    landmark_vertices,
    new_indices,
    region_vertices,
    restrict_triangles,
)
from facerecon.models.vrn import IBUG68_MIRROR  # noqa: F401  (the engine's mirrored samples)

# Regions that make up the rendered, voxelised head (facerecon.face_model.ICT_VERTEX_RANGES).
SOLID_REGIONS = ("face", "head_and_neck", "eyeball_left", "eyeball_right", "mouth_socket")


@dataclass
class FaceModel:
    """Linear head model restricted to the solid regions; all tensors on one device."""

    neutral: torch.Tensor  # (V, 3)
    identity_basis: torch.Tensor  # (I, V * 3)
    expression_basis: torch.Tensor  # (E, V * 3)
    expression_names: list[str]
    triangles: torch.Tensor  # (F, 3) long, indices into the kept vertices
    landmarks68: torch.Tensor  # (68,) long, indices into the kept vertices
    # (68,) long: the project's iBUG-68 map (facerecon/data/landmarks68.json, fitted to
    # human annotations), the landmark head's targets
    annotated68: torch.Tensor
    face_vertices: torch.Tensor  # (Vf,) long: the face region (for NME)
    region_of_vertex: torch.Tensor  # (V,) long: index into SOLID_REGIONS

    @property
    def num_vertices(self) -> int:
        return self.neutral.shape[0]

    def shapes(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """(B, I) identity and (B, E) expression weights -> (B, V, 3) vertices in cm."""
        offsets = identity @ self.identity_basis + expression @ self.expression_basis
        return self.neutral + offsets.view(-1, self.num_vertices, 3)

    def to(self, device: torch.device | str) -> FaceModel:
        moved = {
            name: (value.to(device) if isinstance(value, torch.Tensor) else value)
            for name, value in vars(self).items()
        }
        return FaceModel(**moved)


def load_face_model(directory: str | Path) -> FaceModel:
    """Load `ict_face_light.npz` from `directory` (e.g. ../shared/facemodel)."""
    data = np.load(Path(directory) / "ict_face_light.npz")
    kept = region_vertices(SOLID_REGIONS)
    region = np.full(ICT_VERTICES, -1, dtype=np.int64)
    for i, name in enumerate(SOLID_REGIONS):
        region[slice(*ICT_VERTEX_RANGES[name])] = i
    _, triangles = restrict_triangles(data["triangles"].astype(np.int64), kept)
    new_index = new_indices(kept)
    landmarks = new_index[data["landmarks68"].astype(np.int64)]
    assert (landmarks >= 0).all(), "every 68-point landmark lies on the face"

    def basis(name: str) -> torch.Tensor:
        b = data[name][:, kept, :]
        return torch.from_numpy(np.ascontiguousarray(b.reshape(b.shape[0], -1)))

    return FaceModel(
        neutral=torch.from_numpy(data["neutral"][kept]),
        identity_basis=basis("identity_basis"),
        expression_basis=basis("expression_basis"),
        expression_names=[str(n) for n in data["expression_names"]],
        triangles=torch.from_numpy(triangles),
        landmarks68=torch.from_numpy(landmarks),
        annotated68=torch.from_numpy(new_index[landmark_vertices(data)]),
        face_vertices=torch.from_numpy(new_index[region_vertices(["face"])]),
        region_of_vertex=torch.from_numpy(region[kept]),
    )
