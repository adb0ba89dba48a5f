"""Exported files load back (trimesh) with the same geometry, colours and orientation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh
from gltf_validator import needs_validator, validation_report
from PIL import Image

from facerecon.export import to_glb, to_obj, to_ply, to_png
from facerecon.mesh import Mesh


@pytest.fixture(scope="module")
def head() -> Mesh:
    """A closed mesh in image pixels (y down) whose top (small y) is red, bottom blue."""
    ico = trimesh.creation.icosphere(subdivisions=3, radius=40.0)
    vertices = ico.vertices * [1.0, -1.0, 1.0] + [120.0, 90.0, 0.0]
    colors = np.where(vertices[:, 1:2] < 90, [255, 0, 0], [0, 0, 255]).astype(np.uint8)
    return Mesh(vertices, ico.faces, colors).with_normals()


def load(data: bytes, file_type: str) -> trimesh.Trimesh:
    loaded = trimesh.load(io.BytesIO(data), file_type=file_type, process=False)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    return loaded


@pytest.mark.parametrize("export, file_type", [(to_obj, "obj"), (to_ply, "ply"), (to_glb, "glb")])
def test_round_trip(head, export, file_type):
    data = export(head)
    assert isinstance(data, bytes)
    loaded = load(data, file_type)
    assert len(loaded.vertices) == head.num_vertices
    assert len(loaded.faces) == head.num_faces
    # y is flipped: the file is y up, so the red top has the larger y
    np.testing.assert_allclose(loaded.vertices, head.vertices * [1, -1, 1], atol=1e-3)
    colors = loaded.visual.vertex_colors[:, :3]
    np.testing.assert_array_equal(colors, head.colors)
    top = loaded.vertices[:, 1] > -90
    assert (colors[top] == [255, 0, 0]).all()
    # still counter-clockwise seen from outside: positive volume, outward normals
    assert loaded.is_watertight and loaded.volume > 0
    assert loaded.volume == pytest.approx(4 / 3 * np.pi * 40**3, rel=0.05)


def test_glb_has_normals_and_colours(head):
    import json
    import struct

    data = to_glb(head)
    assert data[:4] == b"glTF" and struct.unpack("<I", data[4:8])[0] == 2
    length = struct.unpack("<I", data[12:16])[0]
    document = json.loads(data[20 : 20 + length])
    attributes = document["meshes"][0]["primitives"][0]["attributes"]
    assert {"POSITION", "NORMAL", "COLOR_0"} <= set(attributes)


def test_obj_lines_carry_colours_and_normals(head):
    lines = to_obj(head).decode().splitlines()
    vertex = next(line for line in lines if line.startswith("v "))
    assert len(vertex.split()) == 7
    assert sum(line.startswith("vn ") for line in lines) == head.num_vertices
    assert next(line for line in lines if line.startswith("f ")).count("//") == 3


def test_meshes_without_colours_export(head):
    plain = Mesh(head.vertices, head.faces)
    for export, file_type in ((to_obj, "obj"), (to_ply, "ply"), (to_glb, "glb")):
        assert len(load(export(plain), file_type).faces) == head.num_faces


@pytest.mark.parametrize("channels", [3, 4])
def test_png_round_trip(channels):
    image = np.random.default_rng(0).integers(0, 256, (12, 17, channels), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(to_png(image))))
    np.testing.assert_array_equal(decoded, image)


def test_png_rejects_other_arrays():
    with pytest.raises(ValueError):
        to_png(np.zeros((4, 4), np.float32))


@needs_validator
def test_glb_passes_the_khronos_validator(head, tmp_path):
    issues = validation_report(to_glb(head), tmp_path)
    assert issues["numErrors"] == issues["numWarnings"] == 0, issues["messages"]
