"""The ICT face model: loading the outer head, and `facerecon import-face-model`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facerecon.cli import main
from facerecon.face_model import (
    ICT_VERTEX_RANGES,
    default_face_model_path,
    load_face_model,
    triangle_uv_indices,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ICT = SHARED / "facemodel" / "ict_face_light.npz"
pytestmark = pytest.mark.skipif(not ICT.is_file(), reason="needs ../shared/facemodel")


@pytest.fixture(scope="module")
def model():
    return load_face_model(ICT)


def test_vertex_ranges_match_the_models_regions_file():
    regions = json.loads((SHARED / "facemodel" / "regions.json").read_text())
    for name, (start, stop) in ICT_VERTEX_RANGES.items():
        assert regions["vertex_ranges_half_open"][name] == [start, stop]


def test_outer_head_subset(model):
    # the ICT face and head, then one vertex closing each eye and the mouth
    assert model.num_vertices == ICT_VERTEX_RANGES["head_and_neck"][1] + 3
    assert model.identity_basis.shape == (40, model.num_vertices, 3)
    assert model.expression_basis.shape[0] == len(model.expression_names) == 53
    assert model.triangles.min() >= 0 and model.triangles.max() < model.num_vertices
    assert model.triangle_uvs.shape == model.triangles.shape
    assert model.triangle_uvs.max() < len(model.uv)
    assert model.landmarks68.shape == (68,)
    # the neutral faces +z: the nose tip is the most forward landmark, its normal points out
    nose = int(model.landmarks68[30])
    assert model.neutral[model.landmarks68, 2].argmax() == 30
    assert model.neutral_normals[nose, 2] > 0.9


def test_only_the_neck_is_open(model):
    """The eye and mouth openings are closed by fans wound like the head: every edge but
    the neck's rim is shared by two triangles running it in opposite directions."""
    t = model.triangles.numpy()
    directed = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # consistent winding
    undirected, uses = np.unique(np.sort(directed, 1), axis=0, return_counts=True)
    rim = np.unique(undirected[uses == 1])
    assert uses.max() == 2
    assert (model.neutral[rim, 1] < -10.0).all()  # the neck's cut, far below the eyes
    eyes = model.landmarks68[36:48].numpy()
    closing = model.neutral[-3:]
    assert torch.allclose(closing[0], model.neutral[eyes[:6]].mean(0), atol=1.0)
    assert torch.allclose(closing[1], model.neutral[eyes[6:]].mean(0), atol=1.0)


def test_mirror_map_reflects_the_head(model):
    mirrored = model.neutral[model.mirror] * torch.tensor([-1.0, 1.0, 1.0])
    assert (mirrored - model.neutral).norm(dim=1).max() < 0.05  # cm
    outer_eye_corners = model.landmarks68[[36, 45]]
    assert model.mirror[outer_eye_corners[0]] == outer_eye_corners[1]


def test_shapes_are_linear_in_the_weights(model):
    identity = torch.zeros(2, 40)
    identity[1, 0] = 1.0
    expression = torch.zeros(2, 53)
    shapes = model.shapes(identity, expression)
    torch.testing.assert_close(shapes[0], model.neutral)
    torch.testing.assert_close(shapes[1] - shapes[0], model.identity_basis[0])


def test_default_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERECON_FACE_MODEL", str(tmp_path / "model.npz"))
    assert default_face_model_path() == tmp_path / "model.npz"
    monkeypatch.delenv("FACERECON_FACE_MODEL")
    assert default_face_model_path().name == "ict_face_light.npz"
    assert ".local/share/facerecon" in str(default_face_model_path())


def write_obj(path: Path, vertices: np.ndarray, lines: str = "") -> None:
    text = "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices)
    path.write_text(text + lines)


def synthetic_facex_model(folder: Path, identities: int = 2, expressions: int = 2) -> dict:
    """A FaceXModel-like folder made from the shared npz: the neutral OBJ with texture
    coordinates and polygons, a few identity and expression OBJs, vertex_indices.json."""
    source = dict(np.load(ICT))
    quads, quads_uv, is_triangle = source["quads"], source["quads_uv"], source["quad_is_triangle"]
    faces = []
    for polygon, polygon_uv, triangle in zip(quads + 1, quads_uv + 1, is_triangle, strict=True):
        corners = 3 if triangle else 4
        pairs = zip(polygon[:corners], polygon_uv[:corners], strict=True)
        faces.append("f " + " ".join(f"{v}/{t}" for v, t in pairs))
    uv = "".join(f"vt {u:.6f} {v:.6f}\n" for u, v in source["uv"])
    folder.mkdir()
    write_obj(folder / "generic_neutral_mesh.obj", source["neutral"], uv + "\n".join(faces) + "\n")
    names = [str(n) for n in source["expression_names"][:expressions]]
    for i in range(identities):
        write_obj(folder / f"identity{i:03d}.obj", source["neutral"] + source["identity_basis"][i])
    for i, name in enumerate(names):
        write_obj(folder / f"{name}.obj", source["neutral"] + source["expression_basis"][i])
    config = {"expressions": names, "idx_to_landmark_verts": source["landmarks68"].tolist()}
    (folder / "vertex_indices.json").write_text(json.dumps(config))
    (folder / "LICENSE").write_text("MIT\n")
    return source


def test_import_face_model_round_trip(tmp_path, capsys):
    source = synthetic_facex_model(tmp_path / "FaceXModel")
    out = tmp_path / "installed" / "ict_face_light.npz"
    assert main(["import-face-model", str(tmp_path / "FaceXModel"), "--out", str(out)]) == 0
    assert "2 identity modes" in capsys.readouterr().out
    assert out.with_suffix(".LICENSE").read_text() == "MIT\n"
    converted = np.load(out)
    for name in ("quads", "quads_uv", "quad_is_triangle", "triangles", "landmarks68"):
        np.testing.assert_array_equal(converted[name], source[name])
    np.testing.assert_allclose(converted["neutral"], source["neutral"], atol=1e-5)
    np.testing.assert_allclose(converted["uv"], source["uv"], atol=1e-5)
    np.testing.assert_allclose(converted["identity_basis"], source["identity_basis"][:2], atol=2e-5)
    np.testing.assert_allclose(
        converted["expression_basis"], source["expression_basis"][:2], atol=2e-5
    )
    assert list(converted["expression_names"]) == list(source["expression_names"][:2])
    loaded = load_face_model(out)
    assert loaded.identity_basis.shape[0] == 2 and len(loaded.expression_names) == 2


def test_import_face_model_explains_a_wrong_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["import-face-model", str(tmp_path / "empty"), "--out", str(tmp_path / "m.npz")])
    assert "generic_neutral_mesh.obj" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_triangle_uvs_follow_the_polygon_split():
    source = np.load(ICT)
    corners = triangle_uv_indices(source["quads_uv"], source["quad_is_triangle"])
    assert corners.shape == source["triangles"].shape
    # each triangle's texture corners belong to the same polygon corners as its vertices
    quads = source["quads"]
    vertex_of_uv = np.full(len(source["uv"]), -1)
    vertex_of_uv[source["quads_uv"].ravel()] = quads.ravel()
    np.testing.assert_array_equal(vertex_of_uv[corners], source["triangles"])


def test_sparse_normals_match_vertex_normals(model):
    from facerecon.face_model import vertex_normals

    shapes = model.shapes(torch.randn(2, model.identity_basis.shape[0]),
                          torch.rand(2, model.expression_basis.shape[0]) * 0.5)  # fmt: skip
    torch.testing.assert_close(model.normals(shapes), vertex_normals(shapes, model.triangles),
                               atol=1e-5, rtol=1e-4)  # fmt: skip
