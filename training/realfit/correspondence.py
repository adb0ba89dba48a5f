"""Which point of the ICT head each annotated landmark is, for every scheme.

Points inside the face are fixed vertices. Points on the face's outline (the 68-point jaw,
CFP's contour, and on CFP profiles the nose and lip silhouette) lie on the occluding
contour, which moves over the head as it turns: each such point gets a *patch* of candidate
vertices around its mean-face vertex, and the fitter re-picks, as the pose changes, the
candidate on the silhouette nearest to the annotated point (landmark marching, as
300W-LP / 3DDFA do it).

CFP annotates one half of the face plus the midline (../shared/realfaces/cfp/README.md):
frontals always the image-left half (the subject's right), profiles the visible half. Each
CFP point is named by the iBUG-68 point it coincides with; "side" picks the subject's
right half (as the iBUG indices are defined on a frontal face) or its mirror image.

A profile's silhouette points (nose, lips) also say what is *not* in the photo: nothing of
the face lies beyond that outline, so the far eye, nose wing and mouth corner must project
behind it. The fitter enforces this with a one-sided cost on those far-side points
(`Scheme.outline`, `FAR_SIDE`): on the mean face the far eye's outer corner clears the nose
only beyond ~60 degrees of yaw, which the visible half's points alone barely fix
(`training.realfit.yaw_ambiguity`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from training.engine.facemodel import SOLID_REGIONS, FaceModel

_FRONTAL_EYE = (36, 37, 38, 39, 40, 41)  # 12 outer, 13-14 upper lid, 15 inner, 16-17 lower lid
_PROFILE_EYE = (36, 37, 38, 39, 41, 40)  # lower lid from the rear corner (16 by 12) forwards
_CFP_REST = (27, 28, 29, 30, 33, 32, 31, 48, 51, 62, 57, 66)  # nose 18-24, mouth 25-29
# the visible half's eye, nose wing and mouth corner, whose mirror images (the far side) a
# profile's outline hides
FAR_SIDE = (36, 37, 38, 39, 40, 41, 31, 48)


@dataclass(frozen=True)
class Scheme:
    ibug: tuple[int, ...]  # the iBUG-68 point each annotated landmark is
    contour: frozenset[int]  # landmarks that slide along the silhouette
    radius_cm: tuple[float, ...]  # each contour landmark's patch radius on the mean face
    outline: tuple[int, ...] = ()  # landmarks on the midline silhouette (profiles)


def _scheme(
    ibug: tuple[int, ...], contour: set[int], jaw: set[int], outline: tuple[int, ...] = ()
) -> Scheme:
    radius = tuple(2.5 if i in jaw else 1.2 for i in range(len(ibug)))
    return Scheme(ibug, frozenset(contour), radius, outline)


SCHEMES = {
    "ibug68": _scheme(tuple(range(68)), set(range(17)), set(range(17))),
    "cfp_frontal": _scheme(
        tuple(range(9)) + (17, 19, 21) + _FRONTAL_EYE + _CFP_REST, set(range(9)), set(range(9))
    ),
    "cfp_profile": _scheme(
        tuple(range(9)) + (17, 19, 21) + _PROFILE_EYE + _CFP_REST,
        set(range(9)),
        set(range(9)),
        (18, 19, 20, 21, 22, 26, 27, 29, 28, 8),  # bridge to nose tip, the lips, the chin
    ),
}
MAX_CANDIDATES = 96


def mirror_vertices(neutral: torch.Tensor) -> torch.Tensor:
    """(V,) long: each vertex's nearest vertex to its reflection in x = 0."""
    points = neutral.numpy()
    _, mirror = cKDTree(points).query(points * np.array([-1.0, 1.0, 1.0], np.float32))
    return torch.from_numpy(mirror.astype(np.int64))


class Correspondences:
    """Landmark -> vertex tables of every (scheme, side), over one 68-point vertex map.

    `landmarks68` defaults to the model's own (ICT's) map; `training.realfit.build` derives
    the project's map from held-in fits and passes it here.
    """

    def __init__(self, model: FaceModel, landmarks68: torch.Tensor | None = None):
        self.model = model
        self.landmarks68 = (model.landmarks68 if landmarks68 is None else landmarks68).cpu()
        self.mirror = mirror_vertices(model.neutral.cpu())
        surface = torch.isin(
            model.region_of_vertex.cpu(),
            torch.tensor([SOLID_REGIONS.index("face"), SOLID_REGIONS.index("head_and_neck")]),
        )
        self.surface = torch.nonzero(surface).squeeze(1)  # face, head and neck vertices
        self._patches: dict[tuple[int, str, float], int] = {}
        self._patch_rows: list[torch.Tensor] = []

    def vertex(self, ibug: int, side: str) -> int:
        v = int(self.landmarks68[ibug])
        return v if side == "right" else int(self.mirror[v])

    def patch(self, ibug: int, side: str, radius: float) -> int:
        """Row of the patch table: surface vertices within `radius` cm of the landmark."""
        key = (ibug, side, radius)
        if key not in self._patches:
            neutral = self.model.neutral.cpu()
            centre = neutral[self.vertex(ibug, side)]
            near = self.surface[(neutral[self.surface] - centre).norm(dim=1) <= radius]
            if len(near) > MAX_CANDIDATES:  # evenly thinned, nearest first
                order = (neutral[near] - centre).norm(dim=1).argsort()
                near = near[order][torch.linspace(0, len(near) - 1, MAX_CANDIDATES).long()]
            row = torch.full((MAX_CANDIDATES,), self.vertex(ibug, side), dtype=torch.long)
            row[: len(near)] = near
            self._patches[key] = len(self._patch_rows)
            self._patch_rows.append(row)
        return self._patches[key]

    def table(self, scheme: str, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(L,) fixed vertex and (L,) patch row (-1: fixed point) of each landmark."""
        s = SCHEMES[scheme]
        vertex = torch.tensor([self.vertex(i, side) for i in s.ibug])
        patch = torch.tensor([
            self.patch(i, side, s.radius_cm[k]) if k in s.contour else -1
            for k, i in enumerate(s.ibug)
        ])  # fmt: skip
        return vertex, patch

    def far_side(self, side: str) -> torch.Tensor:
        """(len(FAR_SIDE),) vertices of the half facing away when `side` faces the camera."""
        other = "left" if side == "right" else "right"
        return torch.tensor([self.vertex(i, other) for i in FAR_SIDE])

    @property
    def patch_vertices(self) -> torch.Tensor:
        """(P, MAX_CANDIDATES) long: every patch made so far (rows padded with the centre)."""
        return torch.stack(self._patch_rows) if self._patch_rows else torch.zeros(0, 1).long()
