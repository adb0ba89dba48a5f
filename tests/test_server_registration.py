"""Registration over gRPC: refused early without a face model, the Registration reply, textured
files and views of the registered mesh with one. The tiny test model predicts a slab, so the
fit means nothing here: these tests check the contract, not the fit's quality."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import trimesh
from grpc_harness import RunningServer
from PIL import Image

from facerecon.errors import InputError
from facerecon.pose import Pose
from facerecon.reconstructor import ReconstructOptions, Reconstructor, WeightsNotFound
from facerecon.registration import Registration
from facerecon.render import render_views
from facerecon.server import ServerConfig
from facerecon.server.convert import parse_request
from facerecon.texture import registered_mesh
from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import service_pb2_grpc
from facerecon_client import (
    build_request,
    registration_arrays,
    texture_image,
    textured_obj_files,
)
from facerecon_client.cli import main as cli_main

ICT = Path(__file__).resolve().parents[1].parent / "shared" / "facemodel" / "ict_face_light.npz"
VIEW = (30.0, 0.0)


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image)


# --- without a face model -------------------------------------------------------------------


class CountingPredict:
    """Stands in for Reconstructor.predict and counts the faces that reached the network."""

    def __init__(self, predict):
        self.predict, self.faces = predict, 0

    def __call__(self, faces):
        self.faces += len(faces)
        return self.predict(faces)


@pytest.fixture(scope="module")
def bare(tiny_weights, tmp_path_factory):
    """A server without a face model, whose network counts the faces it sees."""
    absent = tmp_path_factory.mktemp("nomodel") / "absent.npz"
    reconstructor = Reconstructor(tiny_weights, device="cpu", face_model=absent)
    assert reconstructor.face_model is None
    reconstructor.predict = CountingPredict(reconstructor.predict)
    with RunningServer(reconstructor) as running, running.channel() as channel:
        yield reconstructor, service_pb2_grpc.FaceReconServiceStub(channel)


@pytest.mark.parametrize(
    "options",
    [
        dict(registration=True),
        dict(mesh_encodings=("glb", "textured_glb")),
        dict(mesh_encodings=("textured_obj",)),
        dict(views=[VIEW], view_source="registered"),
    ],
)
def test_registration_without_a_face_model_fails_precondition_before_the_network(
    bare, astronaut_jpeg, options
):
    reconstructor, stub = bare
    before = reconstructor.predict.faces
    with pytest.raises(grpc.RpcError) as caught:
        stub.Reconstruct(build_request(astronaut_jpeg, **options), timeout=60)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "FACERECON_FACE_MODEL" in caught.value.details()
    assert "facerecon import-face-model" in caught.value.details()
    assert reconstructor.predict.faces == before  # refused before it was queued


def test_stream_reports_the_precondition_in_band_and_goes_on(bare, astronaut_jpeg):
    reconstructor, stub = bare
    before = reconstructor.predict.faces
    requests = [
        build_request(astronaut_jpeg, request_id="needs-model", registration=True),
        build_request(astronaut_jpeg, request_id="plain", view_size=64),
    ]
    replies = {
        r.request_id: r
        for r in stub.ReconstructStream(
            (pb.ReconstructStreamRequest(request=q) for q in requests), timeout=60
        )
    }
    assert replies["needs-model"].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "import-face-model" in replies["needs-model"].error.message
    assert replies["plain"].response.mesh.glb[:4] == b"glTF"
    assert not replies["plain"].response.HasField("registration")
    assert reconstructor.predict.faces == before + 1  # the plain one only


def test_model_info_lists_no_registration_without_a_face_model(bare):
    _, stub = bare
    features = set(stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10).features)
    assert "mesh_glb" in features
    assert not features & {"registration", "mesh_textured_glb", "registered_views"}


# --- with the face model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_server(tiny_weights):
    """A server loading the face model named in its config (--face-model), as in production."""
    if not ICT.is_file():
        pytest.skip("needs ../shared/facemodel/ict_face_light.npz")
    with RunningServer(None, weights=tiny_weights, face_model=ICT) as running:
        yield running


@pytest.fixture(scope="module")
def served(served_server):
    with served_server.channel() as channel:
        yield service_pb2_grpc.FaceReconServiceStub(channel)


@pytest.fixture(scope="module")
def registered(served, astronaut_jpeg) -> pb.ReconstructResponse:
    """One reply with every registration output: raw and textured meshes, a view and the
    frontal view of the registered mesh."""
    request = build_request(
        astronaut_jpeg,
        mesh_encodings=("raw", "textured_glb", "textured_obj"),
        views=[VIEW],
        view_size=64,
        frontal_view=True,
        registration=True,
        view_source="registered",
    )
    return served.Reconstruct(request, timeout=120)


def test_registration_reply_has_the_fixed_topology_landmarks_and_texture(registered):
    from facerecon.face_model import load_face_model

    model = load_face_model(ICT)
    reg = registered.registration
    arrays = registration_arrays(reg)
    assert reg.topology == "ict-outer-head-closed"
    assert arrays["vertices"].shape == (model.num_vertices, 3)
    assert np.array_equal(arrays["triangles"], model.triangles.numpy())
    assert arrays["landmarks68_3d"].shape == (68, 3)
    assert np.array_equal(arrays["landmarks68_2d"], arrays["landmarks68_3d"][:, :2])
    assert np.array_equal(arrays["landmarks68_3d"], arrays["vertices"][model.landmarks68])
    assert len(arrays["identity"]) == model.identity_basis.shape[0]
    assert len(arrays["expression"]) == len(reg.expression_names) == len(model.expression_names)
    assert ((arrays["expression"] >= 0) & (arrays["expression"] <= 1)).all()
    assert arrays["uv"].shape == (len(model.uv), 2)
    assert arrays["triangle_uvs"].max() < reg.uv_count
    assert np.isfinite(reg.fit_error) and 0.0 <= reg.inlier_fraction <= 1.0
    assert reg.scale > 0 and reg.HasField("pose")
    atlas = texture_image(reg)
    assert atlas.dtype == np.uint8 and atlas.shape[1] == 2 * atlas.shape[0]
    assert {"registration", "texture"} <= set(registered.timings_ms)
    assert registered.mesh.raw.vertex_count > 0  # the raw mesh is still there


def test_textured_files_carry_the_registered_mesh(registered):
    reg = registered.registration
    scene = trimesh.load(io.BytesIO(registered.mesh.textured_glb), file_type="glb")
    (mesh,) = scene.geometry.values()
    assert len(mesh.faces) == reg.triangle_count
    assert mesh.visual.uv is not None
    files = textured_obj_files(registered.mesh.textured_obj, name="alice")
    assert sorted(files) == ["alice.mtl", "alice.obj", "alice.png"]
    assert b"mtllib alice.mtl\n" in files["alice.obj"]
    assert files["alice.obj"].count(b"\nf ") == reg.triangle_count
    assert b"map_Kd alice.png" in files["alice.mtl"]
    assert np.array_equal(decode(files["alice.png"]), texture_image(reg))


def test_views_of_the_registered_mesh_show_it_textured(registered):
    """The view is exactly what the renderer makes of the reply's registered mesh, coloured
    from the reply's texture."""
    arrays = {k: a.copy() for k, a in registration_arrays(registered.registration).items()}
    registration = Registration(
        vertices=arrays["vertices"],
        triangles=arrays["triangles"],
        landmarks68_3d=arrays["landmarks68_3d"],
        landmarks68_2d=arrays["landmarks68_2d"],
        pose=Pose(0.0, 0.0, 0.0),
        scale=1.0,
        uv=arrays["uv"],
        triangle_uvs=arrays["triangle_uvs"],
        identity=arrays["identity"],
        expression=arrays["expression"],
    )
    shown = registered_mesh(registration, texture_image(registered.registration))
    (expected,) = render_views(shown, [VIEW], 64)
    (view,) = registered.views
    assert np.array_equal(decode(view.image), expected)
    assert decode(registered.frontal_view.image)[..., 3].any()


def test_the_face_region_alone_is_returned_exported_and_shown(served, astronaut_jpeg):
    request = build_request(
        astronaut_jpeg,
        mesh_encodings=("textured_glb",),
        views=[VIEW],
        view_size=64,
        registration=True,
        view_source="registered",
        registration_region="face",
    )
    reply = served.Reconstruct(request, timeout=120)
    reg = reply.registration
    assert reg.topology == "ict-face-closed" and reg.vertex_count == 6706 + 3
    arrays = registration_arrays(reg)
    assert arrays["triangles"].max() == reg.vertex_count - 1
    assert arrays["triangle_uvs"].max() == reg.uv_count - 1
    assert arrays["landmarks68_3d"].shape == (68, 3)
    scene = trimesh.load(io.BytesIO(reply.mesh.textured_glb), file_type="glb")
    (mesh,) = scene.geometry.values()
    assert len(mesh.faces) == reg.triangle_count
    assert decode(reply.views[0].image)[..., 3].any()


def test_model_info_lists_registration_with_a_face_model(served):
    features = set(served.GetModelInfo(pb.GetModelInfoRequest(), timeout=10).features)
    assert {"registration", "mesh_textured_glb", "mesh_textured_obj", "registered_views"} <= (
        features
    )


def test_cli_saves_the_textured_registered_mesh_and_its_figures(
    served_server, astronaut_jpeg, tmp_path
):
    photo = tmp_path / "eileen.jpg"
    photo.write_bytes(astronaut_jpeg)
    out = tmp_path / "out"
    argv = ["reconstruct", served_server.target, str(photo), "--out", str(out), "--views=",
            "--registration", "--quiet"]  # fmt: skip
    assert cli_main(argv) == 0
    assert (out / "eileen_registered.glb").read_bytes()[:4] == b"glTF"
    summary = json.loads((out / "eileen.json").read_text())["registration"]
    assert len(summary["landmarks68_2d"]) == 68 and "jawOpen" in summary["expression"]
    assert set(summary["pose"]) <= {"yawDeg", "pitchDeg", "rollDeg"}


# --- configuration and parsing --------------------------------------------------------------


def test_face_model_flag_and_variable(tmp_path):
    flag = ServerConfig.from_args(["--face-model", str(tmp_path / "a.npz")], environ={})
    assert flag.face_model == tmp_path / "a.npz"
    env = ServerConfig.from_args([], environ={"FACERECON_FACE_MODEL": str(tmp_path / "b.npz")})
    assert env.face_model == tmp_path / "b.npz"
    assert ServerConfig.from_args([], environ={}).face_model is None


def test_a_face_model_named_but_missing_stops_the_server(tiny_weights, tmp_path):
    missing = tmp_path / "typo.npz"
    with RunningServer(None, wait_ready=False, weights=tiny_weights, face_model=missing) as s:
        with pytest.raises(WeightsNotFound, match="no face model"):
            s.run(s.server.ready())


def test_textured_encodings_and_registered_views_turn_registration_on(astronaut_jpeg):
    plain = parse_request(build_request(astronaut_jpeg), "r").options
    assert not plain.registration and not plain.registered_views
    textured = parse_request(build_request(astronaut_jpeg, mesh_encodings=("textured_obj",)), "r")
    assert textured.options.registration and not textured.options.registered_views
    views = parse_request(build_request(astronaut_jpeg, view_source="registered"), "r")
    assert views.options.registration and views.options.registered_views


def test_unknown_view_source_is_invalid(astronaut_jpeg):
    request = build_request(astronaut_jpeg)
    request.options.view_source = 7  # a value from a newer contract
    with pytest.raises(InputError) as caught:
        parse_request(request, "r")
    assert caught.value.field == "options.view_source"


def test_unknown_registration_region_is_invalid(astronaut_jpeg):
    request = build_request(astronaut_jpeg, registration=True)
    request.options.registration_region = 9  # a value from a newer contract
    with pytest.raises(InputError) as caught:
        parse_request(request, "r")
    assert caught.value.field == "options.registration_region"
    with pytest.raises(InputError, match="registration region"):
        ReconstructOptions(registration=True, registration_region="ears").validate()


def test_registered_views_need_registration():
    with pytest.raises(InputError) as caught:
        ReconstructOptions(registered_views=True).validate()
    assert caught.value.field == "options.view_source"
