"""Fixed-topology output: the ICT face model registered to a reconstructed head surface.

`register(mesh, face_model, pose_init)` fits, to the mesh from the volume (image pixels, y
down), the model's similarity pose, identity and expression weights, then small smooth
per-vertex offsets. The fit runs in a y-up copy of the image frame (DEVELOPERS.md), so the
fitted rotation is the head pose directly.

Data term: point-to-plane distances from model vertices (a fixed subset of the face region)
to nearby vertices of the mesh's camera-facing surface (a projective lookup grid, re-queried
every iteration: `_Target`), robust
(Geman-McClure weights, the scale shrinking) and restricted to model vertices facing the
camera whose normals agree with the surface's: the volume's visible front is what the
network sees, its back is a guess, and where the head leaves the volume the mesh is a flat
cut. Each iteration is one joint Gauss-Newton step of the similarity (rotation, log scale,
translation) and the model weights (the model is linear in them), with L2 priors on the
weights and on the face's size against the crop framing's; expression weights are clipped to
their range [0, 1].

ICP only finds the nearest minimum and a pose estimate from the mesh can be far off, so the
fit starts from several similarities (the estimate and a fan of yaws, each placed by the crop
framing and by the nose tip) and keeps the best by robust cost over stages of growing size
(successive halving). The refinement then moves every camera-facing vertex along the surface
normals, smoothed over the mesh graph (Jacobi sweeps of `(W + alpha L) d = W delta`) and
clamped in length.

All tensors carry a leading batch axis; only the nearest-neighbour queries loop over meshes.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from facerecon.crop import FRAMING
from facerecon.face_model import FaceModel
from facerecon.mesh import FLIP_Y, Mesh
from facerecon.pose import Pose, pose_from_rotation, rotation_matrix

FRAMING_TOLERANCE = math.log(1.25)  # face size vs the framing's, before the cost grows
SEARCH_SCALES = 4.0  # nearest-neighbour search radius, in robust scales
BOX_MARGIN = 0.01  # of the mesh extent: vertices this close to its box lie on a cut
GRID_BORDER = 2  # empty cells around the grid: the widest reach a search may use
# the registered mesh's topologies: the ICT face, head and neck vertices, then one vertex each
# closing the subject's right eye, left eye and mouth; or the face region of that alone
HEAD_TOPOLOGY = "ict-outer-head-closed"
FACE_TOPOLOGY = "ict-face-closed"


@dataclass(frozen=True)
class Stage:
    """One round of the fit: every surviving start is fitted, the best `keep` go on."""

    vertices: int  # face-region vertices in the data term
    iterations: int
    shape_from: int  # iteration from which the model weights are fitted too (pose before)
    robust_scale_cm: tuple[float, float]  # Geman-McClure scale, first and last iteration
    keep: int  # starts per face passed on (lowest robust cost)
    reach: int = 2  # matches are searched this many grid cells around a point


@dataclass(frozen=True)
class FitSettings:
    # starts, each with two translations: with a pose estimate, the estimate turned by
    # these yaws (the learned estimator is within ~10° on most faces); without one, a grid
    estimate_yaws: tuple[float, ...] = (0.0, -25.0, 25.0)
    candidate_yaws: tuple[float, ...] = (-80.0, -50.0, -20.0, 20.0, 50.0, 80.0)
    candidate_pitches: tuple[float, ...] = (-25.0, 0.0, 25.0)
    # successive halving: cheap rounds on many starts, then the full fit on the best one
    stages: tuple[Stage, ...] = (
        Stage(vertices=200, iterations=3, shape_from=3, robust_scale_cm=(2.0, 1.0), keep=2),
        Stage(vertices=400, iterations=2, shape_from=1, robust_scale_cm=(1.5, 0.6), keep=1),
        Stage(
            vertices=700, iterations=4, shape_from=0, robust_scale_cm=(0.8, 0.25), keep=1, reach=1
        ),
    )
    identity_prior: float = 1e-3  # L2 weight of identity weights (~N(0, 1)), in cm^2
    expression_prior: float = 1e-2  # L2 weight of expression weights ([0, 1])
    scale_prior: float = 0.02  # L2 weight of log(face size / the crop framing's)
    pose_prior: float = 0.5  # L2 weight of the rotation's angle (radians) from the estimate
    # 2D landmarks from the photo (a client's or the detector's), where given: their weight
    # against the whole surface term, and their robust scale
    landmark_weight: float = 0.5
    landmark_scale_cm: float = 1.0
    # ... fading out between these yaws of the fit: face detectors' landmarks on profiles are
    # drawn towards a half-profile layout (YuNet's put CFP profiles at ~50° of yaw)
    landmark_yaws: tuple[float, float] = (45.0, 75.0)
    facing_min: float = -0.1  # camera-facing component of a vertex normal to be fitted
    normal_agreement: float = 0.3  # least cosine between model and surface normals
    # refinement
    refine: bool = True
    refine_max_cm: float = 0.6  # longest per-vertex offset
    refine_smoothness: float = 4.0  # alpha: Laplacian weight relative to the data
    refine_sweeps: int = 8


@dataclass
class Registration:
    """The model fitted to one face, in the Mesh frame (image pixels, y down, +z to camera)."""

    vertices: np.ndarray  # (V, 3) float32, ICT outer-head topology
    triangles: np.ndarray  # (F, 3) int32, counter-clockwise seen from outside (y up)
    landmarks68_3d: np.ndarray  # (68, 3) float32
    landmarks68_2d: np.ndarray  # (68, 2) float32, image pixels
    pose: Pose  # from the fitted rotation (DEVELOPERS.md convention)
    scale: float  # image pixels per centimetre
    uv: np.ndarray  # (U, 2) float32 texture coordinates in the atlas (facerecon.texture)
    triangle_uvs: np.ndarray  # (F, 3) int32, indices into `uv` per triangle corner
    identity: np.ndarray  # (I,) float32
    expression: np.ndarray  # (E,) float32 in [0, 1]
    expression_names: list[str] = field(default_factory=list)
    fit_error: float = float("nan")  # RMS point-to-plane distance of fitted vertices, pixels
    inlier_fraction: float = float("nan")  # of the fitted vertices, matched to the surface
    topology: str = HEAD_TOPOLOGY

    def to_mesh(self) -> Mesh:
        return Mesh(self.vertices, self.triangles).with_normals()


def face_region(registration: Registration, face_model: FaceModel) -> Registration:
    """The registration's facial mask alone (`FaceModel.face_region`: no ears, scalp or
    neck), in topology FACE_TOPOLOGY: the kept vertices in their order, the triangles among
    them, and the texture coordinates those use (the atlas is unchanged)."""
    if registration.topology != HEAD_TOPOLOGY:
        raise ValueError(f"expected a {HEAD_TOPOLOGY} registration, got {registration.topology}")
    kept = face_model.face_region.cpu().numpy()
    vertex_index = np.full(len(registration.vertices), -1, np.int64)
    vertex_index[kept] = np.arange(len(kept))
    triangles = vertex_index[registration.triangles]
    inside = (triangles >= 0).all(axis=1)
    used_uvs, triangle_uvs = np.unique(registration.triangle_uvs[inside], return_inverse=True)
    return replace(
        registration,
        vertices=registration.vertices[kept],
        triangles=triangles[inside].astype(np.int32),
        uv=registration.uv[used_uvs],
        triangle_uvs=triangle_uvs.reshape(-1, 3).astype(np.int32),
        topology=FACE_TOPOLOGY,
    )


def register(
    mesh: Mesh,
    face_model: FaceModel,
    pose_init: Pose | None = None,
    settings: FitSettings | None = None,
    landmarks: np.ndarray | None = None,
) -> Registration:
    """Fit the face model to a reconstructed head (see the module docstring). `landmarks`:
    5 (YuNet / insightface order) or 68 (Multi-PIE) 2D points of the face in the mesh's
    frame (x, y pixels), which the fit's projected landmarks are pulled towards."""
    return register_batch([mesh], face_model, [pose_init], settings, landmarks=[landmarks])[0]


def prepare_fit(face_model: FaceModel, settings: FitSettings | None = None) -> None:
    """Build what every fit with this model reuses (vertex subsets, sparse matrices), so the
    first request does not pay for it."""
    settings = settings or FitSettings()
    for stage in settings.stages:
        _fitted_vertices(face_model, stage.vertices)
    _fitted_vertices(face_model, None)
    face_model.degree, face_model.incidence, face_model.neutral_normals  # noqa: B018


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block (process-wide, re-entrant and
    thread-safe: the first caller in sets it, the last one out restores it).

    The fit is thousands of small ops: on a busy 2-core machine each parallel region waits
    for a descheduled worker, and two threads measured 10x slower than one.
    """
    global _single_users, _saved_threads
    with _threads_lock:
        if _single_users == 0:
            _saved_threads = torch.get_num_threads()
            torch.set_num_threads(1)
        _single_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _single_users -= 1
            if _single_users == 0:
                torch.set_num_threads(_saved_threads)


_threads_lock = threading.Lock()
_single_users, _saved_threads = 0, 1


@torch.no_grad()
def register_batch(
    meshes: Sequence[Mesh],
    face_model: FaceModel,
    poses_init: Sequence[Pose | None] | None = None,
    settings: FitSettings | None = None,
    face_sizes: Sequence[float | None] | None = None,
    landmarks: Sequence[np.ndarray | None] | None = None,
) -> list[Registration]:
    """`register` for several meshes at once (one batched fit)."""
    with single_threaded():
        return _register_batch(meshes, face_model, poses_init, settings, face_sizes, landmarks)


def _register_batch(
    meshes: Sequence[Mesh],
    face_model: FaceModel,
    poses_init: Sequence[Pose | None] | None,
    settings: FitSettings | None,
    face_sizes: Sequence[float | None] | None,
    landmarks: Sequence[np.ndarray | None] | None,
) -> list[Registration]:
    settings = settings or FitSettings()
    count = len(meshes)
    poses_init = poses_init or [None] * count
    face_sizes = face_sizes or [None] * count
    landmarks = landmarks or [None] * count
    for mesh in meshes:
        if mesh.num_faces == 0:
            raise ValueError("cannot register an empty mesh")
    model = face_model if face_model.neutral.device.type == "cpu" else face_model.to("cpu")
    targets = [_Target(mesh) for mesh in meshes]
    owners, rotation, scale, translation, face_size = _starts(
        targets, model, poses_init, face_sizes, settings
    )
    observed = _Observed.of(landmarks, targets)
    # a weak pull towards the pose estimate, where there is one: on a profile the visible
    # surface alone can pull the fit into a wrong turn
    anchors = torch.tensor(np.array([np.eye(3) if p is None else p.matrix() for p in poses_init]),
                           dtype=torch.float32)  # fmt: skip
    anchor_weights = torch.tensor([0.0 if p is None else settings.pose_prior for p in poses_init])
    coefficients = None
    for number, stage in enumerate(settings.stages):
        # the last stage is the data's alone: the estimate only keeps the early, coarse
        # stages out of wrong basins, and must not bias the final pose towards its own error
        pull = anchor_weights[owners] * (number < len(settings.stages) - 1)
        fit = _Fit(model, [targets[o] for o in owners], settings, stage.vertices,
                   rotation, scale, translation, face_size, coefficients,
                   anchors[owners], pull, observed.rows(owners))  # fmt: skip
        for iteration in range(stage.iterations):
            fit.step(iteration, stage, shape=iteration >= stage.shape_from)
        best = _best_rows(fit.cost, owners, count, stage.keep)
        fit.keep(best)
        owners = [owners[r] for r in best]
        rotation, scale, translation = fit.rotation, fit.scale, fit.translation
        face_size, coefficients = fit.face_size, fit.coefficients
    vertices = fit.posed(fit.shape_all())
    error, inliers = fit.residual_stats()
    if settings.refine:
        vertices = _refine(vertices, model, targets, settings, fit.scale)
    return [fit.result(b, vertices[b], error[b], inliers[b]) for b in range(count)]


class _Target:
    """A mesh in the y-up frame, centred on its vertex mean, with a projective lookup grid.

    The volume is a box around the head: where the head leaves it (the crop's sides, the
    back of a deep head) the mesh is closed by flat cuts that are not the head's surface.
    Vertices on the mesh's bounding box get zero normals, so matches there never agree with
    a model normal and carry no weight.

    Only the surface seen from the camera is fitted (the model vertices that face it), so
    matches come from the front-most vertex in each cell of an image-plane grid (cells of
    the mesh's edge length): a query is answered by the nearest of the cells within `reach`
    of it (5x5 in the coarse stages, 3x3 at the end). That is projective data association, as
    in depth-camera ICP: a gather instead of a k-d tree search, and no tree to build (measured
    faster per fit and slightly more accurate than the exact nearest vertex).
    """

    def __init__(self, mesh: Mesh):
        vertices = torch.from_numpy(mesh.vertices) * _FLIP_Y
        self.mesh = mesh
        centre = vertices.mean(0, dtype=torch.float64)
        self.centre = centre.numpy()
        self.points = points = vertices - centre.float()
        low, high = torch.aminmax(points, dim=0)
        self.low, self.high = low.numpy(), high.numpy()
        # the grid: cells of the mesh's typical edge length, a border of empty cells
        corners = torch.from_numpy(mesh.faces[::8, :2].astype(np.int64))
        edges = (points[corners[:, 0]] - points[corners[:, 1]]).norm(dim=-1)
        self.cell = max(float(edges.median()), 1e-3) if len(edges) else 1.0
        cells = ((points[:, :2] - low[:2]) / self.cell).long() + GRID_BORDER
        self.width, self.height = (cells.amax(0) + GRID_BORDER + 1).tolist()
        flat = cells[:, 1] * self.width + cells[:, 0]
        size = self.width * self.height
        front = torch.full((size,), -math.inf).scatter_reduce(0, flat, points[:, 2], "amax")
        winner = torch.nonzero(points[:, 2] >= front[flat])[:, 0]  # front-most in its cell
        # per cell: its front-most vertex and normal; empty cells are infinitely far
        chosen = points[winner]
        normals = mesh.normals if mesh.normals is not None else mesh.with_normals().normals
        chosen_normals = torch.from_numpy(normals[winner.numpy()]) * _FLIP_Y
        margin = BOX_MARGIN * float((high - low).max())
        cut = ((chosen[:, :2] < low[:2] + margin) | (chosen[:, :2] > high[:2] - margin)).any(1)
        cut |= chosen[:, 2] < low[2] + margin  # the back; the front is never cut
        chosen_normals[cut] = 0.0
        self.cell_points = torch.full((size, 3), math.inf)
        self.cell_points[flat[winner]] = chosen
        self.cell_normals = torch.zeros(size, 3)
        self.cell_normals[flat[winner]] = chosen_normals
        # the same points as x, y, z rows: distances from contiguous planes are 1.4x faster
        self.cell_planes = self.cell_points.T.contiguous()

    def nearest(
        self, query: torch.Tensor, bound: float = np.inf, reach: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Surface points near (N, 3) points (the nearest front-most vertex of the grid cells
        within `reach` cells of each), and their normals. Points with none within `bound`
        get themselves and a zero normal (no match)."""
        low = torch.from_numpy(self.low[:2])
        cell = ((query[:, :2] - low) / self.cell).floor().long() + GRID_BORDER
        cx = cell[:, 0].clamp(GRID_BORDER, self.width - GRID_BORDER - 1)
        cy = cell[:, 1].clamp(GRID_BORDER, self.height - GRID_BORDER - 1)
        window = _window(reach)
        candidates = (cy * self.width + cx)[:, None] + (window[:, 1] * self.width + window[:, 0])
        near = self.cell_planes.index_select(1, candidates.view(-1)).view(3, *candidates.shape)
        distance = (near[0] - query[:, 0:1]).square_()
        distance += (near[1] - query[:, 1:2]).square_()
        distance += (near[2] - query[:, 2:3]).square_()
        best, column = distance.min(1)  # inf - inf is nan where a query is inf: never best
        chosen = candidates.gather(1, column[:, None])[:, 0]
        found = (best <= bound * bound)[:, None]
        points = torch.where(found, self.cell_points.index_select(0, chosen), query)
        normals = torch.where(found, self.cell_normals.index_select(0, chosen), 0.0)
        return points, normals


_FLIP_Y = torch.from_numpy(FLIP_Y)


@functools.lru_cache(maxsize=4)
def _window(reach: int) -> torch.Tensor:
    """(K, 2) cell offsets (dx, dy) of a square of side 2 * reach + 1."""
    if not 0 <= reach <= GRID_BORDER:
        raise ValueError(f"reach must be in [0, {GRID_BORDER}], got {reach}")
    span = range(-reach, reach + 1)
    return torch.tensor([(dx, dy) for dy in span for dx in span])


def _nearest(
    targets: Sequence[_Target], query: torch.Tensor, bound: torch.Tensor, reach: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest vertices and normals of (B, N, 3) points, row b in targets[b] within bound[b]
    pixels (`_Target.nearest`); the rows of one target (its many starts) are looked up in
    one call."""
    points, normals = torch.empty_like(query), torch.empty_like(query)
    rows: dict[int, list[int]] = {}
    for b, target in enumerate(targets):
        rows.setdefault(id(target), []).append(b)
    for group in rows.values():
        found, found_normals = targets[group[0]].nearest(
            query[group].reshape(-1, 3), float(bound[group].max()), reach
        )
        points[group] = found.view(len(group), -1, 3)
        normals[group] = found_normals.view(len(group), -1, 3)
    return points, normals


def _starts(
    targets: Sequence[_Target],
    model: FaceModel,
    poses: Sequence[Pose | None],
    face_sizes: Sequence[float | None],
    settings: FitSettings,
) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Starting similarities: a pose estimate can be far off and ICP only finds the nearest
    minimum, so several rotations (the estimate and a fan of yaws) are tried, each with two
    translations. Returns the face each start belongs to, rotations, scales, translations
    and the face size (68-landmark box side, pixels) the crop framing implies."""
    owners, starts = [], []
    for b, (target, pose) in enumerate(zip(targets, poses, strict=True)):
        if pose is not None:
            rotations = [
                rotation_matrix(pose.yaw + turn, pose.pitch, pose.roll)
                for turn in settings.estimate_yaws
            ]
        else:
            rotations = [
                rotation_matrix(yaw, pitch)
                for yaw in settings.candidate_yaws
                for pitch in settings.candidate_pitches
            ]
        for r in rotations:
            mine = _initial_similarity(target, model, r, face_sizes[b])
            starts += mine
            owners += [b] * len(mine)
    rotation, scale, translation, face_size = (
        torch.tensor(np.array(values), dtype=torch.float32) for values in zip(*starts, strict=True)
    )
    return owners, rotation, scale, translation, face_size


def _best_rows(cost: torch.Tensor, owners: Sequence[int], count: int, keep: int) -> list[int]:
    """Rows of the `keep` lowest costs of each of `count` owners, owner by owner."""
    owners_t = torch.tensor(owners)
    rows = []
    for b in range(count):
        mine = torch.nonzero(owners_t == b)[:, 0]
        rows += mine[cost[mine].argsort()[:keep]].tolist()
    return rows


def _initial_similarity(
    target: _Target, model: FaceModel, rotation: np.ndarray, face_size: float | None
) -> list[tuple[np.ndarray, float, np.ndarray, float]]:
    """Scale and translation from the crop framing (DEVELOPERS.md): the volume spans the
    crop, whose centre is the 68-landmark box's centre and whose side is
    `FRAMING.side_over_face` times that box's larger side (`face_size` overrides it, in
    pixels); in depth, the model's most forward landmark meets the surface's front. Two
    starts: that, and the model's nose tip on the surface's most forward midline point."""
    landmarks = model.neutral[model.landmarks68].double().numpy() @ rotation.T
    lo, hi = target.low, target.high
    if face_size is None:
        face_size = (hi - lo)[:2].max() / FRAMING.side_over_face
    scale = face_size / np.ptp(landmarks[:, :2], axis=0).max()
    box_centre = (landmarks[:, :2].max(axis=0) + landmarks[:, :2].min(axis=0)) / 2.0
    shift_xy = (hi + lo)[:2] / 2.0 - scale * box_centre
    framed = np.append(shift_xy, hi[2] - scale * landmarks[:, 2].max())
    # or: the nose tip on the surface's most forward point near the midline
    sample = target.points[::4].numpy()  # plenty to find a nose tip
    left, forward = sample @ rotation[:, 0], sample @ rotation[:, 2]
    midline = np.abs(left - (left.max() + left.min()) / 2.0) < 0.15 * np.ptp(left)
    if not midline.any():  # a surface with nothing near its middle (e.g. two slabs): all of it
        midline[:] = True
    tip = sample[midline][np.argmax(forward[midline])]
    nosed = tip - scale * landmarks[30]
    return [(rotation, scale, framed, face_size), (rotation, scale, nosed, face_size)]


# The five points of YuNet / insightface from the 68: the subject's right eye (mean of 36-41),
# left eye (42-47), nose tip (30), right and left mouth corners (48, 54).
_FIVE_FROM_68 = np.zeros((5, 68), np.float32)
_FIVE_FROM_68[0, 36:42] = _FIVE_FROM_68[1, 42:48] = 1.0 / 6.0
_FIVE_FROM_68[2, 30] = _FIVE_FROM_68[3, 48] = _FIVE_FROM_68[4, 54] = 1.0


@dataclass(frozen=True)
class _Observed:
    """2D landmarks of the photo, one row per row of the fit's batch: points (B, P, 2) in
    the y-up frame about the target's centre, the (B, P, 68) selection that makes each
    from the model's 68 landmarks, and which rows of P are given (B, P)."""

    points: torch.Tensor
    selection: torch.Tensor
    valid: torch.Tensor

    @property
    def any(self) -> bool:
        return bool(self.valid.any())

    def rows(self, rows: Sequence[int]) -> _Observed:
        rows = list(rows)
        return _Observed(self.points[rows], self.selection[rows], self.valid[rows])

    @classmethod
    def of(cls, landmarks: Sequence[np.ndarray | None], targets: Sequence[_Target]) -> _Observed:
        count = len(targets)
        points, valid = torch.zeros(count, 68, 2), torch.zeros(count, 68)
        selection = torch.zeros(count, 68, 68)
        for b, (given, target) in enumerate(zip(landmarks, targets, strict=True)):
            if given is None:
                continue
            given = np.asarray(given, np.float64)
            if given.shape == (68, 2):
                chosen = np.eye(68, dtype=np.float32)
            elif given.shape == (5, 2):
                chosen = _FIVE_FROM_68
            else:
                raise ValueError(f"landmarks must be 5 or 68 (x, y) points, got {given.shape}")
            if not np.isfinite(given).all():
                raise ValueError("landmarks must be finite")
            here = given * FLIP_Y[:2] - target.centre[:2]
            points[b, : len(given)] = torch.from_numpy(here.astype(np.float32))
            selection[b, : len(given)] = torch.from_numpy(chosen)
            valid[b, : len(given)] = 1.0
        return cls(points, selection, valid)


class _Fit:
    """Similarity + linear-model fit on a fixed subset of face vertices, batched."""

    def __init__(
        self,
        model: FaceModel,
        targets: Sequence[_Target],
        settings: FitSettings,
        vertices: int,
        rotation: torch.Tensor,
        scale: torch.Tensor,
        translation: torch.Tensor,
        face_size: torch.Tensor,
        coefficients: torch.Tensor | None,
        anchor: torch.Tensor,
        anchor_weight: torch.Tensor,
        observed: _Observed,
    ):
        self.model, self.targets, self.settings = model, targets, settings
        self.observed = observed
        self.observed_offsets = None  # (B, P, 3, K): the observed points' model offsets
        self.anchor, self.anchor_weight = anchor, anchor_weight  # (B, 3, 3), (B,)
        self.rotation, self.scale, self.translation = rotation, scale, translation
        self.face_size = face_size
        self.flat_basis, self.basis_by_axis, self.mean, self.normals = _fitted_vertices(
            model, vertices
        )
        self.landmark_basis, _, self.landmark_mean, self.landmark_normals = _fitted_vertices(
            model, None
        )
        # L2 weights of the rotation vector, log scale (towards the framing) and translation
        self.similarity_prior = torch.tensor(
            [1e-6] * 3 + [settings.scale_prior] + [1e-6] * 3, dtype=torch.float64
        )
        identities = model.identity_basis.shape[0]
        self.prior = torch.cat([
            torch.full((identities,), settings.identity_prior),
            torch.full((model.expression_basis.shape[0],), settings.expression_prior),
        ]).double()  # fmt: skip
        expressions = model.expression_basis.shape[0]
        self.low = torch.cat([torch.full((identities,), -5.0), torch.zeros(expressions)])
        self.high = torch.cat([torch.full((identities,), 5.0), torch.ones(expressions)])
        if coefficients is None:
            coefficients = torch.zeros(len(targets), identities + expressions)
        self.coefficients = coefficients
        self.sigma_cm = 1.0

    def search_bound(self) -> torch.Tensor:
        """(B,) pixels: matches beyond a few robust scales carry (almost) no weight."""
        return SEARCH_SCALES * self.sigma_cm * self.scale

    def keep(self, rows: list[int]) -> None:
        """Drop all but these rows of the batch."""
        self.targets = [self.targets[r] for r in rows]
        self.rotation, self.scale = self.rotation[rows], self.scale[rows]
        self.translation, self.coefficients = self.translation[rows], self.coefficients[rows]
        self.face_size, self.cost = self.face_size[rows], self.cost[rows]
        self.anchor, self.anchor_weight = self.anchor[rows], self.anchor_weight[rows]
        self.observed = self.observed.rows(rows)
        if self.observed_offsets is not None:
            self.observed_offsets = self.observed_offsets[rows]

    def posed(self, shape: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) model-frame cm -> y-up frame pixels about each target's centre."""
        return (
            self.scale[:, None, None] * shape @ self.rotation.transpose(1, 2)
            + self.translation[:, None]
        )

    def shape_subset(self) -> torch.Tensor:
        return self.mean + (self.coefficients @ self.flat_basis).view(-1, *self.mean.shape)

    def shape_all(self) -> torch.Tensor:
        m = self.model
        identities = m.identity_basis.shape[0]
        return m.shapes(self.coefficients[:, :identities], self.coefficients[:, identities:])

    def weights(
        self, posed: torch.Tensor, normals: torch.Tensor, residual_cm: torch.Tensor
    ) -> torch.Tensor:
        """Robust weights: camera-facing model vertices whose normal agrees with the surface."""
        facing = self.normals @ self.rotation.transpose(1, 2)  # (B, n, 3) y-up camera frame
        s = self.settings
        keep = (facing[..., 2] > s.facing_min) & ((facing * normals).sum(-1) > s.normal_agreement)
        geman_mcclure = (self.sigma_cm**2 / (self.sigma_cm**2 + residual_cm**2)) ** 2
        return keep * geman_mcclure

    def step(self, iteration: int, stage: Stage, shape: bool) -> None:
        """New matches, then one joint Gauss-Newton step of the pose (rotation, log scale,
        translation) and, if `shape`, the model weights, with their L2 priors. Residuals are
        in cm; the robust scale shrinks geometrically over the iterations."""
        first, last = stage.robust_scale_cm
        self.sigma_cm = first * (last / first) ** (iteration / max(1, stage.iterations - 1))
        posed = self.posed(self.shape_subset())
        points, normals = _nearest(self.targets, posed, self.search_bound(), stage.reach)
        landmarks = self.landmark_shape()
        projected = self.landmark_points(landmarks) if self.observed.any else None
        if iteration == stage.iterations - 1:  # the cost of the fit so far ranks the starts
            self.cost = self.robust_cost(posed, points, normals, landmarks, projected)
        scale = self.scale[:, None, None]
        residual = ((posed - points) * normals).sum(-1) / scale[..., 0]
        q = posed - self.translation[:, None]  # scale * R @ shape
        jacobian = (
            torch.cat(
                [torch.linalg.cross(q, normals), (q * normals).sum(-1, keepdim=True), normals], -1
            )
            / scale
        )
        # a weak pull of the log scale towards the crop framing's: a head seen edge-on can
        # otherwise shrink into a small, well-fitting patch
        batch = len(self.targets)
        prior = self.similarity_prior.repeat(batch, 1)
        prior[:, :3] += self.anchor_weight[:, None].double()
        current = torch.zeros(batch, 7, dtype=torch.float64)
        if self.anchor_weight.any():
            current[:, :3] = _rotation_vector(self.rotation @ self.anchor.transpose(1, 2))
        current[:, 3] = self.framing_error(landmarks).double()
        if shape:  # R^T n: the surface normals in the model frame
            model_normals = normals @ self.rotation
            x, y, z = self.basis_by_axis  # (n, K) each
            model_jacobian = (
                model_normals[..., 0:1] * x
                + model_normals[..., 1:2] * y
                + model_normals[..., 2:3] * z
            )
            jacobian = torch.cat([jacobian, model_jacobian], -1)
            prior = torch.cat([prior, self.prior.expand(batch, -1)], -1)
            current = torch.cat([current, self.coefficients.double()], -1)
        w = self.weights(posed, normals, residual)
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-9)
        # sums in float32 (a thousand terms), the solve in float64 (the priors span 1e-6..1)
        if projected is not None:  # the 2D landmarks' rows, appended to the surface's
            landmark_jacobian, landmark_residual, landmark_w = self.landmark_terms(projected, shape)
            jacobian = torch.cat([jacobian, landmark_jacobian], 1)
            residual = torch.cat([residual, landmark_residual], 1)
            w = torch.cat([w, landmark_w], 1)
        weighted = jacobian * w[..., None]
        hessian = (weighted.transpose(1, 2) @ jacobian).double() + torch.diag_embed(prior)
        gradient = (weighted.transpose(1, 2) @ residual[..., None])[..., 0].double()
        gradient = gradient + prior * current
        delta = torch.linalg.solve(hessian, -gradient[..., None])[..., 0].float()
        self.rotation = _rodrigues(delta[:, :3]) @ self.rotation
        self.scale = self.scale * torch.exp(delta[:, 3])
        self.translation = self.translation + delta[:, 4:7]
        if shape:
            updated = self.coefficients + delta[:, 7:]
            self.coefficients = torch.maximum(torch.minimum(updated, self.high), self.low)

    def landmark_shape(self) -> torch.Tensor:
        """(B, 68, 3) the model's 68 landmarks, model frame (cm)."""
        return self.landmark_mean + (self.coefficients @ self.landmark_basis).view(-1, 68, 3)

    def landmark_points(self, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The observed points' model counterparts, from `landmark_shape`: (B, P, 3) posed
        (y-up pixels) and their visibility (B, P) in [0, 1], from how much their normals face
        the camera."""
        points = self.observed.selection @ self.posed(landmarks)
        normals = self.observed.selection @ self.landmark_normals @ self.rotation.transpose(1, 2)
        visible = (normals[..., 2] / normals.norm(dim=-1).clamp_min(1e-6) / 0.3).clamp(0, 1)
        forward = self.rotation[:, :, 2]  # the face's forward axis in the camera frame
        yaw = torch.rad2deg(torch.atan2(forward[:, 0], forward[:, 2])).abs()
        low, high = self.settings.landmark_yaws
        frontal_enough = 1.0 - ((yaw - low) / (high - low)).clamp(0.0, 1.0)
        return points, visible * frontal_enough[:, None]

    def landmark_terms(
        self, projected: tuple[torch.Tensor, torch.Tensor], shape: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of x and y residuals (cm) of the projected landmarks (`landmark_points`)
        against the observed ones: Jacobian (B, 2P, 7 [+ K]), residual (B, 2P) and weights
        (B, 2P), robust and summing to `landmark_weight` per face."""
        points, visible = projected
        scale = self.scale[:, None, None]
        residual = (points[..., :2] - self.observed.points) / scale  # (B, P, 2)
        q = (points - self.translation[:, None]) / scale  # scale * R @ shape, in cm
        zero, one = torch.zeros_like(q[..., 0]), torch.ones_like(q[..., 0])
        qx, qy, qz = q.unbind(-1)
        # d(omega x q)/d omega, d/d log scale, d/d translation; rows x then y per point
        row_x = torch.stack([zero, qz, -qy, qx, one / scale[..., 0], zero, zero], -1)
        row_y = torch.stack([-qz, zero, qx, qy, zero, one / scale[..., 0], zero], -1)
        jacobian = torch.stack([row_x, row_y], 2)  # (B, P, 2, 7)
        if shape:  # R B: the observed points' model offsets, rotated; x and y rows
            if self.observed_offsets is None:
                offsets = self.landmark_basis.view(-1, 68, 3)  # (K, 68, 3)
                self.observed_offsets = torch.einsum(
                    "bpj,kjd->bpdk", self.observed.selection, offsets
                )
            rotated = torch.einsum("bpdk,bcd->bpck", self.observed_offsets, self.rotation[:, :2])
            jacobian = torch.cat([jacobian, rotated], -1)
        sigma = self.settings.landmark_scale_cm
        robust = (sigma**2 / (sigma**2 + residual.square().sum(-1))) ** 2
        w = visible * robust * self.observed.valid
        w = w / (self.observed.valid.sum(-1, keepdim=True).clamp_min(1) * 2)
        w = (self.settings.landmark_weight * w)[..., None].expand(-1, -1, 2)
        batch = len(self.targets)
        return (
            jacobian.reshape(batch, -1, jacobian.shape[-1]),
            residual.reshape(batch, -1),
            w.reshape(batch, -1),
        )

    def framing_error(self, landmarks: torch.Tensor) -> torch.Tensor:
        """(B,) log of the fitted 68-landmark box's (`landmark_shape`) larger side over the
        framing's."""
        xy = (landmarks @ self.rotation.transpose(1, 2))[..., :2]
        side = (xy.amax(1) - xy.amin(1)).amax(-1) * self.scale
        return torch.log(side / self.face_size)

    def robust_cost(
        self,
        posed: torch.Tensor,
        points: torch.Tensor,
        normals: torch.Tensor,
        landmarks: torch.Tensor,
        projected: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """(B,) mean Geman-McClure cost over camera-facing fitted vertices (a match whose
        normal disagrees costs 1), plus a penalty for an implausible face size (from
        `landmarks`, the `landmark_shape`) and the observed landmarks' cost (`projected`,
        the `landmark_points`, where there are any)."""
        residual_cm = ((posed - points) * normals).sum(-1) / self.scale[:, None]
        facing = self.normals @ self.rotation.transpose(1, 2)
        seen = facing[..., 2] > self.settings.facing_min
        agree = (facing * normals).sum(-1) > self.settings.normal_agreement
        cost = torch.where(agree, residual_cm**2 / (self.sigma_cm**2 + residual_cm**2), 1.0)
        fitted = (cost * seen).sum(-1) / seen.sum(-1).clamp_min(1)
        # a fit whose face is much smaller or larger than the crop framing's is implausible
        excess = (self.framing_error(landmarks).abs() - FRAMING_TOLERANCE).clamp_min(0.0)
        if projected is not None:  # and one far from the photo's landmarks, less likely
            points, visible = projected
            distance = (points[..., :2] - self.observed.points).square().sum(-1)
            distance = distance / self.scale[:, None] ** 2
            sigma = self.settings.landmark_scale_cm
            cost = visible * self.observed.valid * distance / (sigma**2 + distance)
            count = self.observed.valid.sum(-1).clamp_min(1)
            fitted = fitted + self.settings.landmark_weight * cost.sum(-1) / count
        return fitted + excess

    def residual_stats(self) -> tuple[list[float], list[float]]:
        """RMS point-to-plane distance (pixels) of inlier fitted vertices, and their share."""
        posed = self.posed(self.shape_subset())
        points, normals = _nearest(self.targets, posed, self.search_bound())
        residual = ((posed - points) * normals).sum(-1)
        w = self.weights(posed, normals, residual / self.scale[:, None])
        inlier = w > 0.25  # within the robust scale
        rms = ((residual**2 * inlier).sum(-1) / inlier.sum(-1).clamp_min(1)).sqrt()
        return rms.tolist(), inlier.float().mean(-1).tolist()

    def result(self, b: int, vertices: torch.Tensor, error: float, inliers: float) -> Registration:
        model = self.model
        image = (vertices.double().numpy() + self.targets[b].centre) * FLIP_Y
        image = image.astype(np.float32)
        landmarks = image[model.landmarks68.numpy()]
        identities = model.identity_basis.shape[0]
        coefficients = self.coefficients[b].numpy()
        return Registration(
            vertices=image,
            triangles=model.triangles.numpy().astype(np.int32),
            landmarks68_3d=landmarks,
            landmarks68_2d=landmarks[:, :2].copy(),
            pose=pose_from_rotation(self.rotation[b].double().numpy()),
            scale=float(self.scale[b]),
            uv=(model.uv.numpy() * np.array([0.5, 1.0], np.float32)).astype(np.float32),
            triangle_uvs=model.triangle_uvs.numpy().astype(np.int32),
            identity=coefficients[:identities].copy(),
            expression=coefficients[identities:].copy(),
            expression_names=list(model.expression_names),
            fit_error=float(error),
            inlier_fraction=float(inliers),
        )


@functools.lru_cache(maxsize=16)
def _fitted_vertices(
    model: FaceModel, count: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed random subset of `count` face-region vertices (None: the 68 landmarks): their
    identity then expression offsets as (K, n * 3) and as (3, n, K) (the layouts the shape
    and the Jacobian products want), neutral positions and neutral normals (enough to tell
    which way a vertex faces). Cached: every fit uses the same subset."""
    if count is None:
        subset = model.landmarks68
    else:
        face = model.face_vertices
        order = torch.randperm(len(face), generator=torch.Generator().manual_seed(0))
        subset = face[order[:count]].sort().values
    basis = torch.cat([model.identity_basis[:, subset], model.expression_basis[:, subset]])
    by_axis = basis.permute(2, 1, 0).contiguous()
    return basis.flatten(1), by_axis, model.neutral[subset], model.neutral_normals[subset]


# Rotations of a few starts at a time: scipy's and numpy's per-call cost is a fraction of
# torch's dozen small ops (measured 5x faster for Rodrigues' formula).
def _rodrigues(omega: torch.Tensor) -> torch.Tensor:
    """(B, 3) rotation vectors -> (B, 3, 3) rotation matrices."""
    matrices = Rotation.from_rotvec(omega.double().numpy()).as_matrix()
    return torch.from_numpy(matrices).to(omega.dtype)


def _rotation_vector(rotation: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotation matrices -> (B, 3) rotation vectors (the inverse of `_rodrigues`)."""
    r = rotation.double().numpy()
    cos = np.clip((np.trace(r, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    axis = np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], -1)
    # axis = 2 sin(angle) * unit axis; near 0, angle / (2 sin(angle)) -> 1/2
    vector = axis * (angle / np.maximum(2.0 * np.sin(angle), 1e-6))[:, None]
    return torch.from_numpy(vector).to(rotation.dtype)


def _refine(
    vertices: torch.Tensor,
    model: FaceModel,
    targets: Sequence[_Target],
    settings: FitSettings,
    scale: torch.Tensor,
) -> torch.Tensor:
    """Small smooth offsets along the surface normals (see the module docstring)."""
    batch, count, _ = vertices.shape
    model_normals = model.normals(vertices)
    facing = model_normals[..., 2] > settings.facing_min
    limit = settings.refine_max_cm * scale[:, None]
    points, normals = vertices.clone(), model_normals.clone()  # no pull where not facing
    for b, target in enumerate(targets):  # only camera-facing vertices are looked up
        # the fit is close by now: the nearest 3x3 cells suffice
        found = target.nearest(vertices[b, facing[b]], float(2.0 * limit[b]), reach=1)
        points[b, facing[b]], normals[b, facing[b]] = found
    residual = ((vertices - points) * normals).sum(-1)  # pixels
    w = (
        facing
        & ((model_normals * normals).sum(-1) > settings.normal_agreement)
        & (residual.abs() < limit)
    ).float()
    wanted = -residual[..., None] * normals  # (B, V, 3) onto the tangent plane of the match
    alpha = settings.refine_smoothness
    # vertex-major (V, B * 3): one sparse product sums every vertex's neighbours
    data = (w[..., None] * wanted).transpose(0, 1).reshape(count, -1)
    denominator = (w + alpha * model.degree).clamp_min(1e-9).T.repeat_interleave(3, 1)
    offset = torch.zeros_like(data)
    for _ in range(settings.refine_sweeps):
        offset = (data + alpha * (model.adjacency @ offset)) / denominator
    offset = offset.view(count, batch, 3).transpose(0, 1)
    length = offset.norm(dim=-1, keepdim=True)
    offset = offset * (limit[..., None] / length.clamp_min(1e-9)).clamp(max=1.0)
    return vertices + offset
