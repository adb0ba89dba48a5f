"""The shipped YuNet is the default detector: whole photos land on the face, tight crops still
work (the whole image when no face is found, and the reply says so), and it can be turned off.
Locally (Reconstructor) and over gRPC (a real server, real channel)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from grpc_harness import RunningServer
from PIL import Image

from facerecon.detect import SHIPPED_DETECTOR, YuNetDetector, detector_path
from facerecon.image import decode_image
from facerecon.reconstructor import (
    DEFAULT_WEIGHTS,
    NO_FACE_FOUND,
    ReconstructOptions,
    Reconstructor,
)
from facerecon.server import ServerConfig
from facerecon.v1 import service_pb2_grpc
from facerecon.v1 import types_pb2 as types
from facerecon_client import build_request, mesh_arrays

# skimage's astronaut (Eileen Collins), 512×512, her face (as test_detect.py has it)
ASTRONAUT_BOX = np.array([178, 63, 268, 176])
NO_VIEWS = ReconstructOptions(frontal=False, pose=False)
UTKFACE = Path(__file__).resolve().parents[2] / "shared" / "realfaces" / "utkface" / "crop_part1"


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def inside(points: np.ndarray, box: np.ndarray, spare: float = 0.0) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    return (
        (x >= box[0] - spare)
        & (x <= box[2] + spare)
        & (y >= box[1] - spare)
        & (y <= box[3] + spare)
    )


@pytest.fixture(scope="module")
def tiny(tiny_weights) -> Reconstructor:
    return Reconstructor(tiny_weights, device="cpu")


def test_the_shipped_yunet_is_the_default_and_can_be_turned_off(tiny_weights, monkeypatch):
    monkeypatch.delenv("FACERECON_DETECTOR", raising=False)
    assert SHIPPED_DETECTOR.is_file() and SHIPPED_DETECTOR.stat().st_size < 1 << 20
    assert (SHIPPED_DETECTOR.parent / "YUNET_LICENSE").read_text().count("Apache License") >= 1
    assert "Apache" in (SHIPPED_DETECTOR.parent / "YUNET_NOTICE").read_text()
    rec = Reconstructor(tiny_weights, device="cpu")
    assert isinstance(rec.detector, YuNetDetector) and rec.detector_path == SHIPPED_DETECTOR
    for off in (None, "none", ""):
        assert Reconstructor(tiny_weights, device="cpu", detector=off).detector is None
    monkeypatch.setenv("FACERECON_DETECTOR", "none")  # the server's variable turns it off too
    assert Reconstructor(tiny_weights, device="cpu").detector is None
    assert ServerConfig.from_args([], environ={}).detector == "default"
    config = ServerConfig.from_args(["--detector", "none"], environ={})
    assert detector_path(config.detector) is None


def test_a_detector_file_beside_the_weights_wins(tiny_weights, tmp_path, monkeypatch):
    """The Docker images copy weights/ elsewhere: the default is found beside the checkpoint."""
    monkeypatch.delenv("FACERECON_DETECTOR", raising=False)
    weights = tmp_path / "facerecon.pt"
    weights.write_bytes(tiny_weights.read_bytes())
    assert Reconstructor(weights, device="cpu").detector_path == SHIPPED_DETECTOR
    (tmp_path / SHIPPED_DETECTOR.name).write_bytes(SHIPPED_DETECTOR.read_bytes())
    assert Reconstructor(weights, device="cpu").detector_path == tmp_path / SHIPPED_DETECTOR.name


def test_a_whole_photo_lands_on_the_face_with_the_shipped_model(monkeypatch):
    """The astronaut's whole 512×512 photo, no box: the mesh is her face, not the picture."""
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("needs the shipped weights/facerecon.pt")
    monkeypatch.delenv("FACERECON_DETECTOR", raising=False)
    rec = Reconstructor(device="cpu")
    result = rec(jpeg(skimage.data.astronaut()), options=NO_VIEWS)
    assert result.face_source == "detector" and result.notes == []
    np.testing.assert_allclose(result.face_box, ASTRONAUT_BOX, atol=10)
    xy = result.mesh.vertices[:, :2]
    assert inside(xy, ASTRONAUT_BOX, spare=25).mean() > 0.9  # the head: a little past the box
    np.testing.assert_allclose(np.median(xy, axis=0), ASTRONAUT_BOX.reshape(2, 2).mean(0), atol=20)
    # a tight crop of her face, and a UTKFace crop: the face fills them, and so does the mesh
    x0, y0, x1, y1 = ASTRONAUT_BOX
    tight = np.ascontiguousarray(skimage.data.astronaut()[y0 - 10 : y1 + 10, x0 - 10 : x1 + 10])
    crops = [tight] + [decode_image(f.read_bytes()) for f in sorted(UTKFACE.glob("*.jpg"))[:1]]
    for crop in crops:
        result = rec(crop, options=NO_VIEWS)
        height, width = crop.shape[:2]
        centre = np.median(result.mesh.vertices[:, :2], axis=0) / (width, height)
        assert np.abs(centre - 0.5).max() < 0.2
        span = np.ptp(result.mesh.vertices[:, :2], axis=0)
        assert span[0] > 0.5 * width and span[1] > 0.5 * height
    # the same photo taken whole, as the service did by default before: not on her face
    whole = Reconstructor(device="cpu", detector=None)(
        jpeg(skimage.data.astronaut()), options=NO_VIEWS
    )
    assert whole.face_source == "whole_image"
    assert inside(whole.mesh.vertices[:, :2], ASTRONAUT_BOX, spare=25).mean() < 0.5


def test_crops_still_work_and_the_fallback_is_said(tiny, astronaut):
    # the test suite's astronaut crop (200×200 around her face): the detector finds her
    result = tiny(astronaut, options=NO_VIEWS)
    assert result.face_source == "detector" and result.notes == []
    # a tight crop that her face fills edge to edge
    x0, y0, x1, y1 = ASTRONAUT_BOX
    tight = np.ascontiguousarray(skimage.data.astronaut()[y0:y1, x0:x1])
    result = tiny(tight, options=NO_VIEWS)
    assert result.face_source in ("detector", "whole_image") and len(result.mesh.faces) > 0
    centre = np.median(result.mesh.vertices[:, :2], axis=0)
    assert inside(centre[None], np.array([0, 0, x1 - x0, y1 - y0]), spare=0).all()
    # no face at all: the whole image is the crop, and the result says so
    grey = np.full((240, 200, 3), 128, np.uint8)
    result = tiny(grey, options=NO_VIEWS)
    assert result.face_source == "whole_image" and result.notes == [NO_FACE_FOUND]
    assert result.face_box is None and len(result.mesh.faces) > 0
    # a face box given: neither detector nor fallback
    result = tiny(grey, face_box=(50, 60, 150, 180), options=NO_VIEWS)
    assert result.face_source == "request" and result.notes == []


def test_the_reply_says_how_the_face_was_found(tiny, tiny_weights):
    whole = jpeg(skimage.data.astronaut())
    grey = jpeg(np.full((240, 200, 3), 128, np.uint8))
    with RunningServer(tiny) as server, server.channel() as channel:
        stub = service_pb2_grpc.FaceReconServiceStub(channel)
        reply = stub.Reconstruct(build_request(whole, mesh_encodings=("raw",)), timeout=60)
        assert reply.face_source == types.FACE_SOURCE_DETECTOR and not reply.notes
        box = reply.detected_face
        np.testing.assert_allclose([box.x0, box.y0, box.x1, box.y1], ASTRONAUT_BOX, atol=10)
        # the tiny model's slab fills its crop: the crop is her face, not the whole photo
        vertices = mesh_arrays(reply.mesh.raw)["vertices"]
        assert inside(vertices[:, :2], ASTRONAUT_BOX, spare=40).all()
        reply = stub.Reconstruct(build_request(grey, mesh_encodings=("raw",)), timeout=60)
        assert reply.face_source == types.FACE_SOURCE_WHOLE_IMAGE
        assert list(reply.notes) == [NO_FACE_FOUND] and not reply.HasField("detected_face")
        request = build_request(grey, face_box=(50, 60, 150, 180), mesh_encodings=("raw",))
        assert stub.Reconstruct(request, timeout=60).face_source == types.FACE_SOURCE_REQUEST
    off = Reconstructor(tiny_weights, device="cpu", detector=None)
    with RunningServer(off) as server, server.channel() as channel:
        stub = service_pb2_grpc.FaceReconServiceStub(channel)
        reply = stub.Reconstruct(build_request(whole, mesh_encodings=("raw",)), timeout=60)
        assert reply.face_source == types.FACE_SOURCE_WHOLE_IMAGE and not reply.notes
        vertices = mesh_arrays(reply.mesh.raw)["vertices"]
        assert not inside(vertices[:, :2], ASTRONAUT_BOX, spare=40).all()


def test_making_the_detector_prints_nothing():
    """OpenCV 5 warned on stderr every time YuNet was made; with the detector on by default
    that would be every start of every command."""
    import subprocess
    import sys

    code = "from facerecon.detect import SHIPPED_DETECTOR as s, load_detector; load_detector(s)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == ""
