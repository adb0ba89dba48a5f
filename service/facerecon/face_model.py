"""The ICT face model (a linear morphable head) restricted to the outer head, as torch tensors.

The model is not part of the product: users bring their own copy of the ICT-FaceKit
(MIT licence, USC Institute for Creative Technologies) and convert it once with
`facerecon import-face-model DIR` (`import_face_model` below). `load_face_model()` reads the
npz from `$FACERECON_FACE_MODEL`, else `~/.local/share/facerecon/ict_face_light.npz`, and
returns None when there is none, so that everything else works without it.

The npz holds the full ICT topology (26,719 vertices; arrays described in
`../shared/facemodel/README.md`). Shapes are `neutral + w_id @ identity + w_exp @ expression`
in centimetres, +x the subject's left, +y up, +z out of the face. Only the outer head
(`HEAD_REGIONS`: the face, and the head and neck) is kept: it is the surface a volume shows.
The eyeballs, mouth interior, teeth and eyelashes are left out, so the eyes of a registered
mesh are open holes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from scipy.spatial import cKDTree

ENV_VAR = "FACERECON_FACE_MODEL"
DEFAULT_PATH = Path("~/.local/share/facerecon/ict_face_light.npz")

# Half-open vertex ranges of the ICT topology's parts (the model's regions.json).
ICT_VERTEX_RANGES: dict[str, tuple[int, int]] = {
    "face": (0, 9409),
    "narrow_face": (0, 6706),
    "head_and_neck": (9409, 11248),
    "mouth_socket": (11248, 13294),
    "eyeball_left": (21451, 23021),
    "eyeball_right": (23021, 24591),
}
ICT_VERTICES = 26719
# The project's 68-point map (ICT vertex of each iBUG-68 point), derived from the ICT head
# fitted to 300-W helen_train + afw (training/realfit/build.py): the model's own landmark
# vertices put the jaw several per cent of the face box too low and the inner brows too far
# in. Used in place of the npz's `landmarks68` wherever the file is present.
LANDMARKS68_FILE = Path(__file__).with_name("data") / "landmarks68.json"
HEAD_REGIONS = ("face", "head_and_neck")
IDENTITY_MODES = 40  # the first modes carry most of the variance; more only slows the fit


def default_face_model_path() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH).expanduser()


def landmark_vertices(data: Mapping[str, np.ndarray]) -> np.ndarray:
    """(68,) ICT vertices of the iBUG-68 points: the project's map where shipped, else the
    model's own."""
    if LANDMARKS68_FILE.is_file():
        return np.asarray(json.loads(LANDMARKS68_FILE.read_text())["vertices"], np.int64)
    return data["landmarks68"].astype(np.int64)


def region_vertices(regions: Sequence[str]) -> np.ndarray:
    """Sorted ICT vertex indices of the union of `regions` (names of ICT_VERTEX_RANGES)."""
    keep = np.zeros(ICT_VERTICES, dtype=bool)
    for name in regions:
        keep[slice(*ICT_VERTEX_RANGES[name])] = True
    return np.flatnonzero(keep)


def new_indices(kept: np.ndarray) -> np.ndarray:
    """(ICT_VERTICES,) index of each ICT vertex among the `kept` ones; -1 if dropped."""
    new_index = np.full(ICT_VERTICES, -1, dtype=np.int64)
    new_index[kept] = np.arange(len(kept))
    return new_index


def restrict_triangles(triangles: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles whose corners are all `kept`: (mask over `triangles`, corners re-indexed into
    `kept`)."""
    mapped = new_indices(kept)[triangles]
    inside = (mapped >= 0).all(axis=1)
    return inside, mapped[inside]


def triangle_uv_indices(quads_uv: np.ndarray, quad_is_triangle: np.ndarray) -> np.ndarray:
    """Texture-coordinate index of each triangle corner, in the order the npz's `triangles`
    were split from its polygons: (0, 1, 2) for every polygon, then (0, 2, 3) for quads."""
    first = quads_uv[:, [0, 1, 2]]
    second = quads_uv[:, [0, 2, 3]]
    both = np.stack([first, second], axis=1)  # (P, 2, 3)
    keep = np.stack([np.ones_like(quad_is_triangle), ~quad_is_triangle], axis=1)
    return both[keep]


@dataclass(eq=False)  # compared and hashed by identity: the registration caches per model
class FaceModel:
    """The outer head of the ICT model; every tensor on one device, float32 or long."""

    neutral: torch.Tensor  # (V, 3) cm
    identity_basis: torch.Tensor  # (I, V, 3) offsets, weights ~ N(0, 1)
    expression_basis: torch.Tensor  # (E, V, 3) offsets, weights in [0, 1]
    expression_names: list[str]
    triangles: torch.Tensor  # (F, 3) long, counter-clockwise seen from outside (y up)
    triangle_uvs: torch.Tensor  # (F, 3) long, indices into `uv`
    uv: torch.Tensor  # (U, 2) texture coordinates; u in [0, 2): face tile, head tile
    landmarks68: torch.Tensor  # (68,) long: Multi-PIE 68-point landmark vertices
    face_vertices: torch.Tensor  # (Vf,) long: the face region, where fits look
    mirror: torch.Tensor  # (V,) long: the vertex nearest each vertex's reflection in x = 0

    @property
    def num_vertices(self) -> int:
        return self.neutral.shape[0]

    def shapes(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """(B, I) identity and (B, E) expression weights -> (B, V, 3) vertices in cm."""
        offsets = identity @ self.identity_basis.flatten(
            1
        ) + expression @ self.expression_basis.flatten(1)
        return self.neutral + offsets.view(-1, *self.neutral.shape)

    @cached_property
    def face_region(self) -> torch.Tensor:
        """(Vr,) long, sorted: the facial mask (ICT's "narrow_face": forehead to chin, between
        the ears; no ears, scalp or neck) and the vertices appended to close its eyes and
        mouth."""
        kept = region_vertices(HEAD_REGIONS)
        mask = new_indices(kept)[region_vertices(["narrow_face"])]
        closing = np.arange(len(kept), self.num_vertices)
        region = np.concatenate([mask[mask >= 0], closing])
        return torch.from_numpy(region).to(self.face_vertices.device)

    @cached_property
    def neutral_normals(self) -> torch.Tensor:
        """(V, 3) unit outward normals of the neutral head."""
        return vertex_normals(self.neutral[None], self.triangles)[0]

    @cached_property
    def adjacency(self) -> torch.Tensor:
        """(V, V) float32 sparse CSR: 1 where two vertices share an edge (sums over
        neighbours)."""
        t = self.triangles.cpu().numpy()
        source = np.concatenate([t[:, 0], t[:, 1], t[:, 2], t[:, 1], t[:, 2], t[:, 0]])
        target = np.concatenate([t[:, 1], t[:, 2], t[:, 0], t[:, 0], t[:, 1], t[:, 2]])
        count = self.num_vertices
        ones = np.ones(len(source), np.float32)
        adjacency = scipy.sparse.csr_matrix((ones, (source, target)), shape=(count, count))
        adjacency.data[:] = 1.0  # an edge of two triangles was summed twice
        return _torch_csr(adjacency)

    @cached_property
    def degree(self) -> torch.Tensor:
        """(V,) float32: each vertex's number of neighbours."""
        return torch.diff(self.adjacency.crow_indices()).float()

    @cached_property
    def incidence(self) -> torch.Tensor:
        """(V, F) float32 sparse CSR: 1 where a vertex is a corner of a triangle."""
        t = self.triangles.cpu().numpy()
        corners = np.tile(np.arange(len(t)), 3)
        ones = np.ones(len(corners), np.float32)
        return _torch_csr(
            scipy.sparse.csr_matrix(
                (ones, (t.T.reshape(-1), corners)), shape=(self.num_vertices, len(t))
            )
        )

    @cached_property
    def _corners(self) -> torch.Tensor:
        """(3F,) long: the triangles' corners, flat (one gather fetches them all)."""
        return self.triangles.reshape(-1).contiguous()

    def normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """`vertex_normals` of (B, V, 3) CPU shapes of this model: coordinates gathered as
        planes (contiguous, 3x faster than (..., 3) slices), face normals summed per vertex
        by one sparse product."""
        batch = vertices.shape[0]
        planes = vertices.permute(2, 0, 1).reshape(3 * batch, -1)  # (3B, V): x, y, z rows
        x, y, z = planes.index_select(1, self._corners).view(3, batch, -1, 3).unbind(0)
        e1x, e1y, e1z = x[..., 1] - x[..., 0], y[..., 1] - y[..., 0], z[..., 1] - z[..., 0]
        e2x, e2y, e2z = x[..., 2] - x[..., 0], y[..., 2] - y[..., 0], z[..., 2] - z[..., 0]
        face_normals = torch.stack(  # (F, 3, B) for the vertex-major product
            [e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x], 0
        ).permute(2, 0, 1)
        summed = self.incidence @ face_normals.reshape(face_normals.shape[0], -1)
        summed = summed.view(-1, 3, batch).permute(2, 0, 1)
        return torch.nn.functional.normalize(summed, dim=-1, eps=1e-12)

    def to(self, device: torch.device | str) -> FaceModel:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device) if isinstance(value, torch.Tensor) else value
        return FaceModel(**moved)


def _torch_csr(matrix: scipy.sparse.csr_matrix) -> torch.Tensor:
    """A float32 torch sparse CSR copy (its products are ~1.7x faster than scipy's here)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used for products only
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data.astype(np.float32)),
            size=matrix.shape,
        )


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit normals (B, V, 3) of y-up meshes wound counter-clockwise."""
    corners = vertices[:, triangles]  # (B, F, 3, 3)
    face_normals = torch.linalg.cross(
        corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1
    )
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(1, triangles[:, k], face_normals)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


def _openings(
    triangles: np.ndarray,
    triangle_uvs: np.ndarray,
    vertices: np.ndarray,
    near: Sequence[np.ndarray],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The boundary loops of a mesh nearest each group of vertices in `near` (by the distance
    of the loop's mean to the group's mean): per loop, its (n, 2) directed rim edges as the
    head's triangles run them, and the (n, 2) texture-coordinate indices of their ends."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edge_uvs = np.concatenate(
        [triangle_uvs[:, [0, 1]], triangle_uvs[:, [1, 2]], triangle_uvs[:, [2, 0]]]
    )
    count = len(vertices)
    keys = edges[:, 0] * count + edges[:, 1]
    on_rim = ~np.isin(edges[:, 1] * count + edges[:, 0], keys)  # no triangle across the edge
    rim_edges, rim_uvs = edges[on_rim], edge_uvs[on_rim]
    following = dict(zip(rim_edges[:, 0].tolist(), range(len(rim_edges)), strict=True))
    loops, seen = [], np.zeros(len(rim_edges), bool)
    for first in range(len(rim_edges)):
        loop, edge = [], first
        while not seen[edge]:  # walk the loop: each rim vertex starts exactly one rim edge
            seen[edge] = True
            loop.append(edge)
            edge = following[int(rim_edges[edge, 1])]
        if loop:
            loops.append(np.array(loop))
    centres = np.array([vertices[rim_edges[loop, 0]].mean(0) for loop in loops])
    chosen = [
        loops[int(np.linalg.norm(centres - vertices[group].mean(0), axis=1).argmin())]
        for group in near
    ]
    return [(rim_edges[loop], rim_uvs[loop]) for loop in chosen]


def face_model_from_arrays(
    data: Mapping[str, np.ndarray],
    regions: Sequence[str] = HEAD_REGIONS,
    identity_modes: int = IDENTITY_MODES,
) -> FaceModel:
    """A FaceModel from the npz's arrays, keeping the vertices of `regions`."""
    if data["neutral"].shape != (ICT_VERTICES, 3):
        raise ValueError(f"not the ICT topology: neutral has shape {data['neutral'].shape}")
    kept = region_vertices(regions)
    inside, triangles = restrict_triangles(data["triangles"].astype(np.int64), kept)
    triangle_uvs = triangle_uv_indices(data["quads_uv"], data["quad_is_triangle"])[inside]
    new_index = new_indices(kept)
    landmarks = new_index[landmark_vertices(data)]
    if (landmarks < 0).any():
        raise ValueError("the 68 landmarks must lie in the kept regions")
    face = new_index[region_vertices(["face"])]
    neutral = data["neutral"][kept].astype(np.float32)
    identity = data["identity_basis"][:identity_modes, kept].astype(np.float32)
    expression = data["expression_basis"][:, kept].astype(np.float32)
    uv = data["uv"].astype(np.float32)
    triangle_uvs = triangle_uvs.astype(np.int64)
    # the eyes and the mouth are openings of the outer head: close each with a fan around a
    # new vertex (appended after the ICT ones) at its rim's mean, so renders and textured
    # exports show the photo's eyes and mouth there instead of a see-through hole
    inner_mouth = landmarks[60:68]
    for rim, rim_uvs in _openings(triangles, triangle_uvs, neutral, [landmarks[36:42],
                                  landmarks[42:48], inner_mouth]):  # fmt: skip
        centre, centre_uv = len(neutral), len(uv)
        neutral = np.concatenate([neutral, neutral[rim[:, 0]].mean(0, keepdims=True)])
        identity = np.concatenate([identity, identity[:, rim[:, 0]].mean(1, keepdims=True)], 1)
        expression = np.concatenate(
            [expression, expression[:, rim[:, 0]].mean(1, keepdims=True)], 1
        )
        uv = np.concatenate([uv, uv[rim_uvs[:, 0]].mean(0, keepdims=True)])
        # each rim edge a -> b of the head becomes b -> a of a fan triangle: same winding
        fan = np.stack([rim[:, 1], rim[:, 0], np.full(len(rim), centre)], 1)
        fan_uvs = np.stack([rim_uvs[:, 1], rim_uvs[:, 0], np.full(len(rim), centre_uv)], 1)
        triangles = np.concatenate([triangles, fan])
        triangle_uvs = np.concatenate([triangle_uvs, fan_uvs])
    # reflecting x finds each vertex's partner on the other side of the (symmetric) topology
    _, mirror = cKDTree(neutral).query(neutral * np.array([-1.0, 1.0, 1.0], np.float32))

    return FaceModel(
        neutral=torch.from_numpy(neutral),
        identity_basis=torch.from_numpy(np.ascontiguousarray(identity)),
        expression_basis=torch.from_numpy(np.ascontiguousarray(expression)),
        expression_names=[str(n) for n in data["expression_names"]],
        triangles=torch.from_numpy(triangles),
        triangle_uvs=torch.from_numpy(triangle_uvs),
        uv=torch.from_numpy(uv),
        landmarks68=torch.from_numpy(landmarks),
        face_vertices=torch.from_numpy(face[face >= 0]),
        mirror=torch.from_numpy(mirror.astype(np.int64)),
    )


def load_face_model(
    path: str | Path | None = None, identity_modes: int = IDENTITY_MODES
) -> FaceModel | None:
    """The face model from `path` (default: `default_face_model_path()`); None if absent."""
    path = Path(path).expanduser() if path is not None else default_face_model_path()
    if not path.is_file():
        return None
    with np.load(path) as data:
        return face_model_from_arrays(data, identity_modes=identity_modes)


def import_face_model(source: str | Path, destination: str | Path | None = None) -> Path:
    """Convert an ICT-FaceKit `FaceXModel` folder (OBJ files) into the npz `load_face_model`
    reads, at `destination` (default: `default_face_model_path()`); returns its path.

    Adapted from `convert_from_obj.py` beside the shared model (ICT Face Model Light, MIT
    licence, USC Institute for Creative Technologies): `generic_neutral_mesh.obj` gives the
    topology and texture coordinates, `identityNNN.obj` the identity modes and the
    blendshapes named in `vertex_indices.json` the expressions, all stored as offsets from
    the neutral. The folder's LICENSE, if present, is copied beside the npz.
    """
    source = Path(source)
    destination = Path(destination) if destination else default_face_model_path()
    neutral_path, indices_path = source / "generic_neutral_mesh.obj", source / "vertex_indices.json"
    for required in (neutral_path, indices_path):
        if not required.is_file():
            raise FileNotFoundError(f"{required} is missing: is {source} a FaceXModel folder?")
    neutral, uv, polygons, polygon_uvs = _read_obj(neutral_path, topology=True)
    if neutral.shape != (ICT_VERTICES, 3):
        raise ValueError(f"{neutral_path} has {len(neutral)} vertices, not the ICT {ICT_VERTICES}")
    quads = np.array([f if len(f) == 4 else f + [f[2]] for f in polygons], np.int32)
    quads_uv = np.array([f if len(f) == 4 else f + [f[2]] for f in polygon_uvs], np.int32)
    is_triangle = np.array([len(f) == 3 for f in polygons])
    # each polygon splits into (0, 1, 2), quads also into (0, 2, 3): see triangle_uv_indices
    split = np.stack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], axis=1)
    triangles = split[np.stack([np.ones_like(is_triangle), ~is_triangle], axis=1)]

    config = json.loads(indices_path.read_text())
    landmarks = np.array(config["idx_to_landmark_verts"], np.int32)
    if landmarks.shape != (68,):
        raise ValueError(f"{indices_path} must list 68 landmark vertices")
    identities = sorted(p.stem for p in source.glob("identity[0-9][0-9][0-9].obj"))
    expressions = [str(name) for name in config["expressions"]]
    if not identities:
        raise FileNotFoundError(f"no identityNNN.obj files in {source}")

    def offsets(names: list[str]) -> np.ndarray:
        out = np.empty((len(names), ICT_VERTICES, 3), np.float32)
        for i, name in enumerate(names):
            vertices = _read_obj(source / f"{name}.obj")[0]
            if vertices.shape != neutral.shape:
                raise ValueError(f"{name}.obj does not have the neutral's {ICT_VERTICES} vertices")
            out[i] = vertices - neutral
        return out

    arrays = dict(
        neutral=neutral.astype(np.float32),
        quads=quads,
        quads_uv=quads_uv,
        quad_is_triangle=is_triangle,
        triangles=triangles.astype(np.int32),
        uv=uv.astype(np.float32),
        landmarks68=landmarks,
        identity_basis=offsets(identities),
        identity_names=np.array(identities),
        expression_basis=offsets(expressions),
        expression_names=np.array(expressions),
    )
    destination.parent.mkdir(parents=True, exist_ok=True)
    # written beside the destination and renamed: a reader never sees half a file
    with tempfile.NamedTemporaryFile(dir=destination.parent, suffix=".npz", delete=False) as f:
        np.savez_compressed(f, **arrays)
    Path(f.name).replace(destination)
    if (source / "LICENSE").is_file():
        shutil.copyfile(source / "LICENSE", destination.with_suffix(".LICENSE"))
    return destination


def _read_obj(
    path: Path, topology: bool = False
) -> tuple[np.ndarray, np.ndarray, list[list[int]], list[list[int]]]:
    """Vertices of an OBJ file; with `topology` also its texture coordinates and its
    polygons' 0-based vertex and texture-coordinate indices."""
    vertices, uv, polygons, polygon_uvs = [], [], [], []
    with open(path) as lines:
        for line in lines:
            if line.startswith("v "):
                vertices.append(line.split()[1:4])
            elif topology and line.startswith("vt "):
                uv.append(line.split()[1:3])
            elif topology and line.startswith("f "):
                corners = [corner.split("/") for corner in line.split()[1:]]
                if len(corners) not in (3, 4) or any(len(c) < 2 or not c[1] for c in corners):
                    raise ValueError(f"{path}: faces must be triangles or quads with v/vt")
                polygons.append([int(c[0]) - 1 for c in corners])
                polygon_uvs.append([int(c[1]) - 1 for c in corners])
    return np.array(vertices, np.float64), np.array(uv, np.float64), polygons, polygon_uvs
