"""Face detection: the shipped YuNet by default, or an ONNX model file the operator supplies
(nothing is downloaded).

`weights/yunet_n_dynamic.onnx` (Apache-2.0, weights/YUNET_LICENSE and YUNET_NOTICE) is the
default: of the three YuNet files in ../shared it found the right face most often on CFP
profiles (people 001-400) and UTKFace crops (bench/detector_choice.py). Two families are
recognised from a model's outputs:
- YuNet (OpenCV Zoo, libfacedetection.train): run with cv2.FaceDetectorYN;
- SCRFD / RetinaFace from insightface (e.g. buffalo_l's det_10g.onnx, scrfd_*_bnkps.onnx): run
  with insightface's SCRFD.

Without a detector (or when it finds no face) the caller treats the whole image as the face
crop. With one, detections come largest face first (the subject of a portrait), each with a box
and, where the model gives them, 5 landmarks in the order `facerecon.crop` expects (the
subject's right eye, i.e. image left, left eye, nose tip, right and left mouth corners). Big
pictures are shrunk so that their longer side is at most `max_side` px before detection: a face
worth reconstructing stays large enough. Then (YuNet only) black margins of a third of the
longer side are added: a face that fills the frame or runs off its edge (a tight crop, a
profile) is found more often and with its whole box (CFP profiles: 98.8 % right instead of
97.8 %, a wrong or cut box 0.4 % instead of 1.1 %), for a few ms.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SHIPPED_DETECTOR_NAME = "yunet_n_dynamic.onnx"
SHIPPED_DETECTOR = Path(__file__).resolve().parents[2] / "weights" / SHIPPED_DETECTOR_NAME
DEFAULT = "default"  # Reconstructor(detector=DEFAULT): $FACERECON_DETECTOR, else the shipped one
NONE_WORDS = {"", "none", "off"}  # what turns the detector off in flags and the variable
MARGIN = 1 / 3  # black margins added before detection, per side, × the longer side
_CV_LOG = threading.Lock()  # OpenCV's log level is process-wide
_YUNET_OUTPUTS = {"cls_8", "obj_8", "bbox_8", "kps_8"}
_SCRFD_OUTPUT_COUNTS = {6, 9, 10, 15}  # 3 or 5 strides, without or with keypoints


@dataclass(frozen=True, eq=False)
class Detection:
    """One face: box (x0, y0, x1, y1) and landmarks (5, 2) in image pixels, score in [0, 1]."""

    box: np.ndarray
    landmarks: np.ndarray | None
    score: float

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


class FaceDetector(ABC):
    """Finds faces in (H, W, 3) uint8 RGB images; thread-safe."""

    def __init__(self, max_side: int, margin: float = MARGIN) -> None:
        self.max_side = max_side
        self.margin = margin
        self._lock = threading.Lock()  # the underlying models keep per-call state

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces found, largest first."""
        height, width = image.shape[:2]
        shrink = min(1.0, self.max_side / max(height, width))
        if shrink < 1.0:
            size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        small_height, small_width = image.shape[:2]
        pad = round(self.margin * max(small_height, small_width))
        if pad:
            image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # both model families take OpenCV's order
        with self._lock:
            found = self._detect(bgr)
        # Back to the original pixels (pixel centres at integer coordinates).
        scale = np.array([width / small_width, height / small_height])

        def original(points: np.ndarray) -> np.ndarray:
            return (points - pad + 0.5) * scale - 0.5

        detections = [
            Detection(
                box=original(box.reshape(2, 2)).reshape(4),
                landmarks=None if points is None else original(points),
                score=score,
            )
            for box, points, score in found
        ]
        return sorted(detections, key=lambda d: d.area, reverse=True)

    @abstractmethod
    def _detect(self, bgr: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None, float]]:
        """(box (4,), landmarks (5, 2) or None, score) per face, in the given image's pixels."""


class YuNetDetector(FaceDetector):
    def __init__(
        self, path: Path, score_threshold: float = 0.6, max_side: int = 640, margin: float = MARGIN
    ) -> None:
        super().__init__(max_side, margin)
        # OpenCV 5 warns on stderr ("setPreferableTarget ... not supported by the new graph
        # engine") whenever a detector is made, for the CPU target it has to set: now on every
        # start, since the detector is on by default. Its log is quieted while it is made.
        with _CV_LOG:
            level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
            try:
                self._model = cv2.FaceDetectorYN.create(
                    str(path), "", (320, 320), score_threshold, 0.3
                )
            finally:
                cv2.utils.logging.setLogLevel(level)

    def _detect(self, bgr: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None, float]]:
        self._model.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self._model.detect(bgr)
        if faces is None:
            return []
        # Each row: x, y, w, h, five (x, y) landmarks, score.
        return [
            (np.array([f[0], f[1], f[0] + f[2], f[1] + f[3]], np.float64),
             f[4:14].reshape(5, 2).astype(np.float64), float(f[14]))
            for f in faces
        ]  # fmt: skip


class ScrfdDetector(FaceDetector):
    def __init__(
        self, path: Path, session: object, score_threshold: float = 0.5, max_side: int = 640
    ) -> None:
        super().__init__(max_side, margin=0.0)  # margins were measured on YuNet only
        from insightface.model_zoo.scrfd import SCRFD  # heavy import, only when configured

        self._model = SCRFD(model_file=str(path), session=session)
        self._model.prepare(ctx_id=-1, det_thresh=score_threshold, input_size=(640, 640))

    def _detect(self, bgr: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None, float]]:
        boxes, points = self._model.detect(bgr)
        return [
            (box[:4].astype(np.float64),
             None if points is None else points[i].astype(np.float64), float(box[4]))
            for i, box in enumerate(boxes)
        ]  # fmt: skip


def detector_path(value: str | Path | None, beside: Path | None = None) -> Path | None:
    """The detector model a setting names: None for none (`None`, '', 'none', 'off'); DEFAULT
    for $FACERECON_DETECTOR if set (itself a setting, e.g. 'none'), else the shipped YuNet
    (`beside` the VRN weights when there is one there, as in the Docker images, else in the
    repository's weights/); anything else is a path."""
    if value == DEFAULT:
        variable = os.environ.get("FACERECON_DETECTOR")
        if variable is not None:
            return detector_path(variable)
        if beside is not None and (beside.parent / SHIPPED_DETECTOR_NAME).is_file():
            return beside.parent / SHIPPED_DETECTOR_NAME
        return SHIPPED_DETECTOR
    if value is None or str(value).strip().lower() in NONE_WORDS:
        return None
    return Path(value)


def load_detector(path: str | Path, score_threshold: float | None = None) -> FaceDetector:
    """A detector for a YuNet or insightface SCRFD ONNX file; its kind is read from the model.

    Raises FileNotFoundError when the file is missing and RuntimeError when it is not an ONNX
    model of either kind.
    """
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face detector model not found: {path}")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types are not public
        raise RuntimeError(f"{path} is not a readable ONNX model: {error}") from error
    outputs = [output.name for output in session.get_outputs()]
    threshold = {} if score_threshold is None else {"score_threshold": score_threshold}
    if _YUNET_OUTPUTS <= set(outputs):
        return YuNetDetector(path, **threshold)
    if len(outputs) in _SCRFD_OUTPUT_COUNTS and len(session.get_inputs()) == 1:
        return ScrfdDetector(path, session, **threshold)
    raise RuntimeError(
        f"{path} is not a face detector this service knows: expected a YuNet or an insightface "
        f"SCRFD / RetinaFace ONNX model (its outputs are {', '.join(outputs)})"
    )
