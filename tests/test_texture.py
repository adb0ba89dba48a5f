"""UV textures from the photo: visible texels sampled, hidden ones mirrored, the rest filled;
textured OBJ and GLB exports."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import trimesh
from gltf_validator import needs_validator, validation_report
from PIL import Image

from facerecon.export import to_png
from facerecon.face_model import load_face_model
from facerecon.pose import Pose, rotation_matrix
from facerecon.registration import Registration
from facerecon.texture import (
    _bilinear,
    _uv_raster,
    bake_texture,
    to_textured_glb,
    to_textured_obj,
)

ICT = Path(__file__).resolve().parents[1].parent / "shared" / "facemodel" / "ict_face_light.npz"
pytestmark = pytest.mark.skipif(not ICT.is_file(), reason="needs ../shared/facemodel")
YAW = 50.0  # the subject's left cheek (model +x) turns away from the camera
SIZE = 256  # texture atlas height (the width is twice that)


@pytest.fixture(scope="module")
def model():
    return load_face_model(ICT)


@pytest.fixture(scope="module")
def registration(model):
    """The neutral head at yaw 50, 10 pixels per cm, as a registration would return it."""
    rotation = rotation_matrix(YAW, 0.0, 0.0)
    vertices = (10.0 * model.neutral.double().numpy() @ rotation.T) * [1.0, -1.0, 1.0]
    vertices = (vertices + [128.0, 128.0, 0.0]).astype(np.float32)
    landmarks = vertices[model.landmarks68.numpy()]
    return Registration(
        vertices=vertices,
        triangles=model.triangles.numpy().astype(np.int32),
        landmarks68_3d=landmarks,
        landmarks68_2d=landmarks[:, :2],
        pose=Pose(YAW, 0.0, 0.0),
        scale=10.0,
        uv=model.uv.numpy() * np.array([0.5, 1.0], np.float32),
        triangle_uvs=model.triangle_uvs.numpy().astype(np.int32),
        identity=np.zeros(40, np.float32),
        expression=np.zeros(53, np.float32),
    )


@pytest.fixture(scope="module")
def photo():
    """Red = column, green = row, blue = 100: every colour says where it was sampled."""
    image = np.zeros((256, 256, 3), np.uint8)
    image[..., 0] = np.arange(256)[None, :]
    image[..., 1] = np.arange(256)[:, None]
    image[..., 2] = 100
    return image


@pytest.fixture(scope="module")
def texture(registration, photo, model):
    return bake_texture(registration, photo, model, size=SIZE)


def texel_points(model, registration, vertex_of=None):
    """Flat atlas index, image-frame surface point and neutral-head corners of each texel."""
    texels, triangle, weights = _uv_raster(model, SIZE)
    corners = registration.triangles[triangle]
    if vertex_of is not None:
        corners = vertex_of[corners]
    points = (registration.vertices[corners] * weights[..., None]).sum(1)
    return texels, points, model.neutral.numpy()[registration.triangles[triangle]]


def inside_photo(points: np.ndarray) -> np.ndarray:
    return ((points[:, :2] >= 0) & (points[:, :2] <= 255)).all(1)


def close_fraction(colours: np.ndarray, where: np.ndarray, levels: float = 2.0) -> float:
    """Share of texels whose (red, green) is the (column, row) they should come from."""
    return float((np.abs(colours - where) <= levels).all(1).mean())


def test_visible_texels_take_the_photos_colour_there(model, registration, texture):
    texels, points, neutral = texel_points(model, registration)
    # the subject's right cheek (model -x), turned towards the camera at yaw 50
    cheek = (neutral[..., 0] < -4.0).all(1) & (neutral[..., 2] > 4.0).all(1)
    cheek &= inside_photo(points)
    assert cheek.sum() > 500
    colours = texture.reshape(-1, 3)[texels[cheek], :2].astype(float)
    assert close_fraction(colours, points[cheek, :2]) > 0.99  # a few sit behind the nose


def test_hidden_texels_take_the_mirror_points_colour(model, registration, texture):
    mirror = model.mirror.numpy()
    texels, _, neutral = texel_points(model, registration)
    _, mirrored_points, _ = texel_points(model, registration, vertex_of=mirror)
    # the subject's left cheek (model +x) faces away from the camera at yaw 50
    hidden = (neutral[..., 0] > 5.0).all(1) & (neutral[..., 2] > 4.0).all(1)
    hidden &= (neutral[..., 0] < 7.0).all(1)  # its mirror is well inside the visible side
    hidden &= inside_photo(mirrored_points)
    assert hidden.sum() > 200
    colours = texture.reshape(-1, 3)[texels[hidden], :2].astype(float)
    assert close_fraction(colours, mirrored_points[hidden, :2]) > 0.99


def test_every_used_texel_is_filled(model, texture):
    texels, _, _ = _uv_raster(model, SIZE)
    assert texture.shape == (SIZE, 2 * SIZE, 3) and texture.dtype == np.uint8
    blue = texture.reshape(-1, 3)[texels, 2].astype(int)
    assert np.abs(blue - 100).max() <= 5  # sampled, mirrored or diffused: never left empty


def test_textured_obj_files(registration, texture):
    files = to_textured_obj(registration, to_png(texture), name="head")
    assert set(files) == {"head.obj", "head.mtl", "head.png"}
    obj = files["head.obj"].decode()
    assert obj.count("\nv ") == len(registration.vertices)
    assert obj.count("\nvt ") == len(registration.uv)
    assert obj.count("\nf ") == len(registration.triangles)
    assert "mtllib head.mtl" in obj and "map_Kd head.png" in files["head.mtl"].decode()
    png = np.asarray(Image.open(io.BytesIO(files["head.png"])))
    np.testing.assert_array_equal(png, texture)


def test_textured_glb(registration, texture):
    """Read back by another library (trimesh): the same triangles, each corner with its
    vertex's position and texture coordinate, and the atlas pixel for pixel."""
    png = to_png(texture)
    scene = trimesh.load(io.BytesIO(to_textured_glb(registration, png)), file_type="glb")
    (mesh,) = scene.geometry.values()
    assert len(mesh.faces) == len(registration.triangles)
    assert mesh.visual.uv.shape == (len(mesh.vertices), 2)
    corners = mesh.faces.ravel()
    np.testing.assert_allclose(  # trimesh turns glTF's v-down back to OBJ's v-up
        mesh.visual.uv[corners], registration.uv[registration.triangle_uvs.ravel()], atol=1e-6
    )
    np.testing.assert_allclose(
        mesh.vertices[corners] * [1, -1, 1], registration.vertices[registration.triangles.ravel()],
        atol=1e-3,
    )  # fmt: skip
    image = mesh.visual.material.baseColorTexture
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), texture)
    # y up, like facerecon.export: the file's top is the image's top
    assert mesh.vertices[:, 1].max() == pytest.approx(-registration.vertices[:, 1].min(), abs=1e-3)


@needs_validator
def test_textured_glb_passes_the_khronos_validator(registration, texture, tmp_path):
    issues = validation_report(to_textured_glb(registration, to_png(texture)), tmp_path)
    assert issues["numErrors"] == issues["numWarnings"] == 0, issues["messages"]


def test_photos_wider_than_opencv_takes_are_sampled_exactly():
    """cv2.remap refuses images 32,767 pixels or more a side: a panorama is sampled tile by
    tile, with the same bilinear weights across tile edges and clamping at the photo's."""
    width = 40_000
    photo = np.zeros((40, width, 3), np.uint8)
    photo[..., 0] = (np.arange(width) % 256)[None]
    photo[..., 1] = np.arange(40)[:, None] * 5
    xy = np.array([[35_000, 10], [16_383.5, 2], [16_384, 2.5], [-5, 50], [45_000, 3]], np.float32)
    red, green = _bilinear(photo, xy)[:, :2].T.tolist()
    assert red == [35_000 % 256, 128, 0, 0, (width - 1) % 256]
    assert green == [50, 10, 12, 195, 15]


def test_bad_photo_is_refused(registration, model):
    with pytest.raises(ValueError):
        bake_texture(registration, np.zeros((10, 10), np.uint8), model, size=SIZE)
