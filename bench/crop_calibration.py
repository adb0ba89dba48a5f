"""Where the constants of facerecon.crop come from; reruns the measurements behind them.

    python -m bench.crop_calibration [--every 5]

1. 5 points → 68-landmark box, on random ICT identities and expressions at random poses
   (orthographic, 3 % point noise): how far the estimate is from the true box.
2. FRAMING.side_over_face: YuNet on UTKFace's 200×200 aligned crops; each face's 68-landmark
   box from its 5 points; 200 px / that box's side is the framing of such a crop sent whole.
3. Detector box → 68-landmark box: YuNet boxes against the 5-point estimate, on UTKFace and
   CFP frontal photos (side / √(w·h), and the centre's drop below the box centre / h).
For 3, photos get black margins before detection (see `yunet_faces`).
Needs ../shared (facemodel, realfaces, models/yunet). Writes bench/results/crop_calibration.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from bench.results_io import save
from facerecon.crop import FRAMING, CropTransform
from facerecon.detect import load_detector
from facerecon.image import decode_image

SHARED = Path(__file__).resolve().parents[2] / "shared"
MIDDLE = (FRAMING.size - 1) / 2


def face_box(transform: CropTransform) -> tuple[np.ndarray, float]:
    """The 68-landmark box (centre, side) that a framed transform came from."""
    side = FRAMING.size / (transform.scale * FRAMING.side_over_face)
    return transform.to_image(np.array([MIDDLE, MIDDLE])), side


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def five_point_accuracy(samples: int = 1000, noise: float = 0.03) -> dict:
    model = np.load(SHARED / "facemodel" / "ict_face_light.npz")
    index = model["landmarks68"]
    neutral = model["neutral"][index]
    identity, expression = model["identity_basis"][:, index], model["expression_basis"][:, index]
    rng = np.random.default_rng(0)
    centre_errors, side_ratios = [], []
    for _ in range(samples):
        weights = np.zeros(len(expression))
        active = rng.choice(len(expression), rng.integers(0, 4), replace=False)
        weights[active] = rng.uniform(0, 1, len(active))
        shape = neutral + np.tensordot(rng.standard_normal(len(identity)), identity, 1)
        shape = shape + np.tensordot(weights, expression, 1)
        angles = rng.uniform(-1, 1, 3) * (60, 30, 30)
        points = (shape @ rotation(*angles).T)[:, :2] * (10, -10)  # 10 px per cm, y down
        five = np.stack(
            [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
        )
        five += rng.normal(0, noise * 65, five.shape)  # the eyes are ~65 px apart
        true_centre, true_side = face_box(CropTransform.from_landmarks(points))
        centre, side = face_box(CropTransform.from_landmarks(five))
        centre_errors.append(np.linalg.norm(centre - true_centre) / true_side)
        side_ratios.append(side / true_side)
    return {
        "samples": samples,
        "poses": "yaw ±60°, pitch ±30°, roll ±30°, up to 3 expressions",
        "point_noise_of_eye_distance": noise,
        "centre_error_over_side": summary(centre_errors),
        "side_ratio": summary(side_ratios),
    }


def yunet_faces(files: list[Path], margins: bool) -> list[dict]:
    detector = load_detector(SHARED / "models" / "yunet" / "yunet_s_dynamic.onnx")
    faces = []
    for file in files:
        image = decode_image(file.read_bytes())
        # Black margins for the box calibration: these photos are tight around the head, and a
        # box that runs into the picture's edge is cut short; a client's box comes from a whole
        # photo. No margins for the framing of a face crop sent as it is.
        pad = max(image.shape[:2]) // 3 if margins else 0
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        detections = detector.detect(padded)
        if detections:
            d = detections[0]
            transform = CropTransform.from_landmarks(d.landmarks - pad)
            centre, side = face_box(transform)
            faces.append({"box": d.box - pad, "centre": centre, "side": side})
    return faces


def box_relation(faces: list[dict]) -> dict:
    boxes = np.array([f["box"] for f in faces])
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    drop = (np.array([f["centre"][1] for f in faces]) - (boxes[:, 1] + boxes[:, 3]) / 2) / height
    side = np.array([f["side"] for f in faces]) / np.sqrt(width * height)
    return {"faces": len(faces), "side_over_sqrt_wh": summary(side), "drop_over_h": summary(drop)}


def summary(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {"median": round(median, 4), "mean": round(values.mean(), 4),
            "std": round(values.std(), 4), "p10": round(p10, 4), "p90": round(p90, 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=int, default=5, help="use every n-th photo")
    args = parser.parse_args()
    real = SHARED / "realfaces"
    utk_files = sorted((real / "utkface" / "crop_part1").glob("*.jpg"))[:: args.every]
    cfp_files = sorted((real / "cfp" / "images").glob("*/frontal/*.jpg"))[:: args.every]
    utk_whole = yunet_faces(utk_files, margins=False)
    utk, cfp = yunet_faces(utk_files, margins=True), yunet_faces(cfp_files, margins=True)
    save(
        "crop_calibration",
        {
            "five_points_to_68_box": five_point_accuracy(),
            "utkface_side_over_face": summary([200 / f["side"] for f in utk_whole]),
            "utkface_side_over_face_with_margins": summary([200 / f["side"] for f in utk]),
            "utkface_box_centre_below_crop_centre_px": summary(
                [f["centre"][1] - 99.5 for f in utk_whole]
            ),
            "yunet_box_to_68_box": {"utkface": box_relation(utk), "cfp_frontal": box_relation(cfp)},
            "framing_in_use": {"side_over_face": FRAMING.side_over_face, "size": FRAMING.size},
        },
    )


if __name__ == "__main__":
    main()
