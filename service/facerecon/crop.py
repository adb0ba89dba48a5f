"""Where a face sits in the network's 192×192 crop, and the one warp that makes the crop.

`FRAMING` is the single definition shared with the training data engine: the crop is square,
centred on the centre of the face's 68-landmark box, with side = `side_over_face` × the larger
side of that box. The 68-landmark box is the bounding box of the 68 Multi-PIE landmarks as
projections of fixed points of the 3D face (the ICT model's `landmarks68` vertices), hidden or
not; its larger side is about 14.8 cm of a frontal adult face (jaw point 0 to jaw point 16).

A client gives the face as 68 landmarks (used directly), as 5 landmarks or as a detector box
(both converted to the 68-landmark box by the calibrations below), or not at all (the whole
image is the crop, as for a photo that is already a face crop).

Calibration (`python -m bench.crop_calibration` reruns it; bench/results/crop_calibration.json):
- side_over_face = 1.15: YuNet on 1,951 UTKFace 200×200 aligned crops, with each face's
  68-landmark box estimated from its 5 points, gives 200 / box side = 1.14 (median; 10th–90th
  percentile 1.08–1.22; 1.13 when detected with margins added), the box centre about 5 px below
  the crop centre. So a face crop like UTKFace's, sent without a box, is framed as in training.
- 5 points → 68-landmark box: a scaled-orthographic camera is fitted to the 5 points of the
  mean ICT face (`_FIVE_POINTS`), and the box is that of the projected mean face outline
  (`_OUTLINE`: jaw, brows, nose tip, the convex hull of the 68 points for any pose). On 1,000
  random ICT identities with expressions at yaw ±60°, pitch ±30°, roll ±30° and 3 % point noise,
  the centre is off by 3 % of the box side on average (90th percentile 5 %) and the side ratio is
  1.00 ± 0.05: well inside the training engine's scale jitter of 0.85–1.15.
- detector box → 68-landmark box: against the 5-point estimate on real photos given margins
  (YuNet on UTKFace and CFP frontal), the 68-landmark box side is 0.92 × √(box width × height)
  (medians 0.91 and 0.93, s.d. 2–3 %) and its centre lies 0.08 × box height below the box centre
  (0.09 and 0.08): WIDER FACE-style boxes (YuNet, SCRFD, RetinaFace) include the forehead.

The warp is one bilinear resampling; shrinking by 2× or more first averages whole k×k pixel
blocks (exact, aligned to the pixel grid) so that the bilinear step never aliases. Where the
crop reaches past the image it is black: a constant that smears no texture into the crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facerecon.errors import InputError

CROP_SIZE = 192
MIN_FACE_SIDE = 16.0  # image px across the 68-landmark box; smaller faces hold no 3D detail
_COORDINATE_LIMIT = 1e7  # px; keeps every product and sum far from float overflow


@dataclass(frozen=True)
class Framing:
    """How a face sits in the crop (see the module docstring)."""

    side_over_face: float
    size: int = CROP_SIZE

    def transform(self, centre_x: float, centre_y: float, face_side: float) -> CropTransform:
        """The crop of a face whose 68-landmark box has this centre and larger side."""
        scale = self.size / (self.side_over_face * face_side)
        middle = (self.size - 1) / 2  # pixel centres are at integer coordinates
        return CropTransform(scale, middle - scale * centre_x, middle - scale * centre_y, self.size)


FRAMING = Framing(side_over_face=1.15)

# The mean ICT face (ict_face_light.npz `neutral`, centimetres) in image axes: x right (the
# subject's left), y down, z towards the camera. Five points in the YuNet / insightface order:
# the subject's right eye (image left; mean of landmarks 36-41), left eye (42-47), nose tip (30),
# right mouth corner (48), left mouth corner (54).
_FIVE_POINTS = np.array(
    [[-3.3, -3.4, 9.2], [3.3, -3.4, 9.2], [0.0, -0.4, 13.1], [-2.5, 3.5, 10.2], [2.5, 3.5, 10.2]]
)
# The face outline: jaw 0-7 and right brow 17-21 (mirrored for 9-16 and 22-26), chin 8, nose tip 30.
_OUTLINE_RIGHT = np.array(
    [
        [-7.4, -3.7, 3.7], [-7.3, -1.5, 3.9], [-6.9, 0.5, 4.5], [-6.6, 2.4, 5.2],
        [-5.7, 4.5, 6.1], [-4.3, 6.2, 7.3], [-3.1, 6.9, 8.8], [-1.5, 7.3, 10.3],
        [-5.8, -5.2, 7.9], [-4.9, -6.0, 9.0], [-3.8, -6.3, 9.8], [-2.4, -6.2, 10.5],
        [-1.2, -5.9, 10.7],
    ]
)  # fmt: skip
_OUTLINE = np.concatenate(
    [_OUTLINE_RIGHT, _OUTLINE_RIGHT * (-1, 1, 1), [[0.0, 7.6, 10.4], [0.0, -0.4, 13.1]]]
)
_BOX_SIDE = 0.92  # 68-landmark box side / √(detector box width × height)
_BOX_DROP = 0.08  # 68-landmark box centre below the detector box centre, × box height


@dataclass(frozen=True)
class CropTransform:
    """Image pixels → crop pixels: crop = scale × image + (tx, ty); depth: z_crop = scale × z."""

    scale: float
    tx: float
    ty: float
    size: int = CROP_SIZE

    @classmethod
    def from_landmarks(cls, landmarks: object, framing: Framing = FRAMING) -> CropTransform:
        """From 68 (x, y) landmarks, or 5 in the YuNet / insightface order (see `_FIVE_POINTS`)."""
        points = _points(landmarks, "landmarks", "5 or 68 (x, y) points")
        if len(points) == 68:
            lo, hi = points.min(axis=0), points.max(axis=0)
        elif len(points) == 5:
            lo, hi = _outline_box(points)
        else:
            raise InputError(
                f"landmarks must be 5 points (eyes, nose tip, mouth corners) or 68, "
                f"not {len(points)}",
                field="landmarks",
            )
        return _framed((lo + hi) / 2, float((hi - lo).max()), "landmarks", framing)

    @classmethod
    def from_box(cls, box: object, framing: Framing = FRAMING) -> CropTransform:
        """From a face detector's box (x0, y0, x1, y1), WIDER FACE style (brow-ish to chin)."""
        x0, y0, x1, y1 = _box(box)
        width, height = x1 - x0, y1 - y0
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2 + _BOX_DROP * height])
        return _framed(centre, _BOX_SIDE * math.sqrt(width * height), "face_box", framing)

    @classmethod
    def whole_image(cls, height: int, width: int, size: int = CROP_SIZE) -> CropTransform:
        """The whole image is the crop: centred, its longer side fills the crop."""
        scale = size / max(height, width)
        middle = (size - 1) / 2
        return cls(scale, middle - scale * (width - 1) / 2, middle - scale * (height - 1) / 2, size)

    @property
    def matrix(self) -> np.ndarray:
        """The 2×3 affine matrix (image → crop), as cv2.warpAffine takes it."""
        return np.array([[self.scale, 0.0, self.tx], [0.0, self.scale, self.ty]])

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Image points (..., 2) or (..., 3) → crop points; a third column (depth) is scaled."""
        points = np.asarray(points, dtype=np.float64)
        out = points * self.scale
        out[..., :2] += (self.tx, self.ty)
        return out

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop points (..., 2) or (..., 3) → image points; the inverse of `to_crop`."""
        points = np.asarray(points, dtype=np.float64).copy()
        points[..., :2] -= (self.tx, self.ty)
        return points / self.scale


@dataclass(frozen=True)
class FaceCrop:
    """The network's input: a (size, size, 3) uint8 RGB crop, and where it came from."""

    image: np.ndarray
    transform: CropTransform


def normalise_face(
    image: np.ndarray, box: object | None = None, landmarks: object | None = None
) -> FaceCrop:
    """Crop a face from an (H, W, 3) uint8 RGB image as the network expects it.

    Landmarks (5 or 68 points) frame the face more precisely than a box, so they win when both
    are given (a detector gives both); the box is still checked. Neither: the whole image.
    Raises InputError (field "face_box" or "landmarks") for malformed faces, faces outside the
    image, and faces too small or far too large for it.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    face_from_box = CropTransform.from_box(box) if box is not None else None  # always checked
    if landmarks is not None:
        transform, field = CropTransform.from_landmarks(landmarks), "landmarks"
    elif face_from_box is not None:
        transform, field = face_from_box, "face_box"
    else:
        transform, field = CropTransform.whole_image(height, width), ""
    if field:
        _check_inside(transform, height, width, field)
    return FaceCrop(_warp(image, transform), transform)


def _points(value: object, field: str, expected: str) -> np.ndarray:
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{field} must be {expected}", field=field) from None
    if points.ndim != 2 or points.shape[1] != 2:
        raise InputError(f"{field} must be {expected}", field=field)
    _check_finite(points, field)
    return points


def _box(box: object) -> tuple[float, float, float, float]:
    try:
        values = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape != (4,):
        raise InputError("face_box must be 4 numbers: x0, y0, x1, y1", field="face_box")
    _check_finite(values, "face_box")
    x0, y0, x1, y1 = values.tolist()
    if not (x1 > x0 and y1 > y0):
        raise InputError("face_box must have x1 > x0 and y1 > y0", field="face_box")
    return x0, y0, x1, y1


def _check_finite(values: np.ndarray, field: str) -> None:
    if not (np.abs(values) <= _COORDINATE_LIMIT).all():  # also False for NaN
        raise InputError(
            f"{field} must be finite numbers within ±{_COORDINATE_LIMIT:,.0f} px", field=field
        )


def _outline_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 68-landmark box of the mean face fitted to 5 points (scaled orthographic camera)."""
    model = _FIVE_POINTS - _FIVE_POINTS.mean(axis=0)
    centre = points.mean(axis=0)
    camera = np.linalg.lstsq(model, points - centre, rcond=None)[0].T  # 2×3 affine camera
    u, s, vt = np.linalg.svd(camera, full_matrices=False)
    camera = s.mean() * (u @ vt)  # the nearest scaled rotation: no shear, no squash
    outline = (_OUTLINE - _FIVE_POINTS.mean(axis=0)) @ camera.T + centre
    return outline.min(axis=0), outline.max(axis=0)


def _framed(centre: np.ndarray, side: float, field: str, framing: Framing) -> CropTransform:
    if side < MIN_FACE_SIDE:
        raise InputError(
            f"the face is too small ({side:.0f} px across); at least {MIN_FACE_SIDE:.0f} px "
            "are needed",
            field=field,
        )
    return framing.transform(float(centre[0]), float(centre[1]), side)


def _check_inside(transform: CropTransform, height: int, width: int, field: str) -> None:
    """The face's centre must be in the image, and the face not absurdly larger than it."""
    middle = (transform.size - 1) / 2
    x, y = transform.to_image(np.array([middle, middle]))
    if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
        raise InputError(f"the face ({field}) is outside the {width}×{height} image", field=field)
    if transform.size / transform.scale > 8 * max(height, width):
        raise InputError(f"the face ({field}) is far larger than the image", field=field)


def _warp(image: np.ndarray, transform: CropTransform) -> np.ndarray:
    height, width = image.shape[:2]
    size = transform.size
    # Shrink by whole k×k blocks first, so that the bilinear warp shrinks by less than 2×.
    k = min(int(1.0 / transform.scale), height, width)
    if k > 1:
        (x0, y0), (x1, y1) = transform.to_image(np.array([[-0.5, -0.5], [size - 0.5, size - 0.5]]))
        left, top = max(0, math.floor(x0) - k), max(0, math.floor(y0) - k)
        cols = (min(width, math.ceil(x1) + k) - left) // k
        rows = (min(height, math.ceil(y1) + k) - top) // k
        region = image[top : top + rows * k, left : left + cols * k]
        image = cv2.resize(region, (cols, rows), interpolation=cv2.INTER_AREA)
        # Block (i, j) of the region has its centre at image pixel (left, top) + k·(i, j) + (k-1)/2.
        transform = CropTransform(
            transform.scale * k,
            transform.tx + transform.scale * (left + (k - 1) / 2),
            transform.ty + transform.scale * (top + (k - 1) / 2),
            size,
        )
    return cv2.warpAffine(
        image,
        transform.matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
