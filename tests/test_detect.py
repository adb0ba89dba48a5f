"""Face detectors from model files, on real photos; and how their faces frame the crop."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from facerecon.crop import CropTransform
from facerecon.detect import Detection, YuNetDetector, load_detector
from facerecon.image import decode_image

SHARED = Path(__file__).parents[1].parent / "shared"
YUNET = SHARED / "models" / "yunet"
UTKFACE = SHARED / "realfaces" / "utkface" / "crop_part1"
needs_yunet = pytest.mark.skipif(not YUNET.exists(), reason="needs ../shared/models/yunet")

# skimage's astronaut (Eileen Collins), 512×512: one face.
ASTRONAUT_BOX = (178, 63, 268, 176)
ASTRONAUT_EYES = ((200, 102), (247, 103))


@pytest.fixture(scope="module")
def yunet() -> YuNetDetector:
    return load_detector(YUNET / "yunet_s_dynamic.onnx")


def insightface_image(name: str) -> np.ndarray:
    images = Path(pytest.importorskip("insightface").__file__).parent / "data" / "images"
    return decode_image((images / name).read_bytes())


@needs_yunet
@pytest.mark.parametrize(
    "model", ["yunet_s_dynamic.onnx", "yunet_n_dynamic.onnx", "yunet_s_640_640.onnx"]
)
def test_yunet_finds_the_astronaut(model: str) -> None:
    detector = load_detector(YUNET / model)
    assert isinstance(detector, YuNetDetector)
    (face,) = detector.detect(skimage.data.astronaut())
    np.testing.assert_allclose(face.box, ASTRONAUT_BOX, atol=8)
    np.testing.assert_allclose(face.landmarks[:2], ASTRONAUT_EYES, atol=5)
    assert face.landmarks.shape == (5, 2) and 0.7 < face.score <= 1


@needs_yunet
def test_big_pictures_are_shrunk_and_mapped_back(yunet: YuNetDetector) -> None:
    big = cv2.resize(skimage.data.astronaut(), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    (face,) = yunet.detect(big)
    np.testing.assert_allclose(face.box, np.multiply(ASTRONAUT_BOX, 4) + 1.5, atol=24)
    np.testing.assert_allclose(face.landmarks[:2], np.multiply(ASTRONAUT_EYES, 4) + 1.5, atol=16)


@needs_yunet
def test_group_photo_gives_every_face_largest_first(yunet: YuNetDetector) -> None:
    faces = yunet.detect(insightface_image("t1.jpg"))  # six people
    assert len(faces) == 6
    areas = [face.area for face in faces]
    assert areas == sorted(areas, reverse=True)
    assert len(yunet.detect(insightface_image("Tom_Hanks_54745.png"))) == 1


@needs_yunet
def test_no_face_no_detection(yunet: YuNetDetector) -> None:
    assert yunet.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    assert yunet.detect(skimage.data.coffee()) == []


def test_missing_or_foreign_model_files_are_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_detector(tmp_path / "nothing.onnx")
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(RuntimeError, match="not a readable ONNX model"):
        load_detector(text)
    onnx = pytest.importorskip("onnx")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "not-a-detector",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    relu = tmp_path / "relu.onnx"
    onnx.save(model, str(relu))
    with pytest.raises(RuntimeError, match="not a face detector"):
        load_detector(relu)


def utkface_faces(yunet: YuNetDetector, count: int, margin: int = 0) -> list[Detection]:
    """The faces of `count` UTKFace crops, detected with black margins of `margin` px added."""
    files = sorted(UTKFACE.glob("*.jpg"))[:: 9780 // count][:count]
    faces = []
    for file in files:
        image = decode_image(file.read_bytes())
        image = cv2.copyMakeBorder(image, *[margin] * 4, cv2.BORDER_CONSTANT, value=0)
        for d in yunet.detect(image)[:1]:
            faces.append(Detection(d.box - margin, d.landmarks - margin, d.score))
    assert len(faces) >= 0.9 * count
    return faces


@needs_yunet
@pytest.mark.skipif(not UTKFACE.exists(), reason="needs ../shared/realfaces/utkface")
def test_box_and_landmarks_frame_a_face_alike(yunet: YuNetDetector) -> None:
    # The box calibration was fitted against the 5-point estimate on faces with room around
    # them (a box that runs into the picture's edge is cut short); they must agree per face.
    for face in utkface_faces(yunet, 40, margin=60):
        by_box = CropTransform.from_box(face.box)
        by_points = CropTransform.from_landmarks(face.landmarks)
        assert 0.85 < by_box.scale / by_points.scale < 1.15
        centre = by_box.to_image([95.5, 95.5]) - by_points.to_image([95.5, 95.5])
        assert np.hypot(*centre) * by_points.scale < 0.1 * 192


@needs_yunet
@pytest.mark.skipif(not UTKFACE.exists(), reason="needs ../shared/realfaces/utkface")
def test_a_utkface_crop_sent_whole_is_framed_as_its_landmarks_would_frame_it(
    yunet: YuNetDetector,
) -> None:
    # FRAMING.side_over_face was chosen for this: sent without a box, an aligned face crop
    # lands in the network's crop as it would from its own landmarks.
    whole = CropTransform.whole_image(200, 200)
    ratios = [
        CropTransform.from_landmarks(f.landmarks).scale / whole.scale
        for f in utkface_faces(yunet, 60)
    ]
    assert abs(np.median(ratios) - 1) < 0.04
    assert np.percentile(ratios, 10) > 0.85 and np.percentile(ratios, 90) < 1.15


def scrfd_like_model(path: Path) -> None:
    """An ONNX file shaped like insightface's SCRFD with keypoints (9 outputs, 640×640 input)
    that always 'sees' one face: anchor (row 15, column 20) of stride 16, score 0.9."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes, outputs = [], []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            value = np.zeros(((640 // stride) ** 2 * 2, width), np.float32)
            if stride == 16:
                anchor = (15 * 40 + 20) * 2
                value[anchor] = {
                    "score": [0.9],
                    "bbox": [4, 5, 4, 6],  # left, top, right, bottom distances in strides
                    "kps": [-1.5, -1.5, 1.5, -1.5, 0, 0, -1, 2, 1, 2],
                }[kind]
            name = f"{kind}_{stride}"
            nodes.append(
                helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))
            )
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape))
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])
    graph = helper.make_graph(nodes, "scrfd-like", [image], outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_scrfd_outputs_become_detections_in_image_pixels(tmp_path: Path) -> None:
    scrfd_like_model(tmp_path / "scrfd.onnx")
    detector = load_detector(tmp_path / "scrfd.onnx")
    assert type(detector).__name__ == "ScrfdDetector"
    # The anchor sits at (320, 240) of the 640×640 input, which a 640×480 image fills unscaled.
    box = np.array([320 - 64, 240 - 80, 320 + 64, 240 + 96])
    eyes = np.array([[320 - 24, 240 - 24], [320 + 24, 240 - 24]])
    (face,) = detector.detect(np.zeros((480, 640, 3), np.uint8))
    np.testing.assert_allclose(face.box, box, atol=1e-3)
    np.testing.assert_allclose(face.landmarks[:2], eyes, atol=1e-3)
    assert face.score == pytest.approx(0.9)
    # Twice as big: shrunk to 640 px for the model, then mapped back to the big image's pixels.
    (face,) = detector.detect(np.zeros((960, 1280, 3), np.uint8))
    np.testing.assert_allclose(face.box, (box + 0.5) * 2 - 0.5, atol=1e-3)
    np.testing.assert_allclose(face.landmarks[:2], (eyes + 0.5) * 2 - 0.5, atol=1e-3)
