"""Which YuNet model ships as the default detector: each one on CFP profiles and UTKFace crops.

    python -m bench.detector_choice [--utk-every 10]

For every model in ../shared/models/yunet/ (score threshold 0.3, so that other thresholds can be
read off the same run), on
- CFP profiles of people 001-400 (4 each; people 401-450 are held out and never read here):
  a hit is a detection whose box holds both the visible eye (mean of fiducials 12-17) and the
  nose tip (fiducial 21), with 5 % of the box's side to spare;
- UTKFace's 200x200 aligned crops (every `--utk-every`-th file): a hit holds the crop's centre
  (the crops are centred on the face);
each photo as it is, with black margins of a third of its longer side, and with margins only
when nothing was found as it is (`facerecon.detect.find_face`). Reports, at score thresholds
0.3-0.7, the rates of photos whose largest face is the right one, a wrong one, or none, and the
median detection time. Writes bench/results/detector_choice.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from bench.results_io import save
from facerecon.detect import YuNetDetector
from facerecon.image import decode_image

SHARED = Path(__file__).resolve().parents[2] / "shared"
YUNET = SHARED / "models" / "yunet"
CFP = SHARED / "realfaces" / "cfp"
UTKFACE = SHARED / "realfaces" / "utkface" / "crop_part1"
CHOICE_PEOPLE = range(1, 401)  # 401-450 are held out: never used for a choice
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def cfp_profiles() -> list[tuple[Path, np.ndarray]]:
    """(photo, points that must lie in the face box: visible eye centre, nose tip)."""
    items = []
    for person in CHOICE_PEOPLE:
        for photo in sorted((CFP / "images" / f"{person:03d}" / "profile").glob("*.jpg")):
            fiducials = CFP / "fiducials" / f"{person:03d}" / "profile" / f"{photo.stem}.txt"
            points = np.loadtxt(fiducials, delimiter=",")
            items.append((photo, np.array([points[12:18].mean(axis=0), points[21]])))
    return items


def utkface_crops(every: int) -> list[tuple[Path, np.ndarray]]:
    files = sorted(UTKFACE.glob("*.jpg"))[::every]
    return [(f, np.array([[99.5, 99.5]])) for f in files]


def holds(box: np.ndarray, points: np.ndarray) -> bool:
    spare = 0.05 * max(box[2] - box[0], box[3] - box[1])
    inside = (points[:, 0] >= box[0] - spare) & (points[:, 0] <= box[2] + spare)
    inside &= (points[:, 1] >= box[1] - spare) & (points[:, 1] <= box[3] + spare)
    return bool(inside.all())


def detections(
    detector: YuNetDetector, items: list[tuple[Path, np.ndarray]], margin: bool
) -> tuple[list[list[tuple[float, bool]]], list[float]]:
    """Per photo, its faces largest first as (score, holds the points); detection times."""
    found, times = [], []
    for path, points in items:
        image = decode_image(path.read_bytes())
        pad = max(image.shape[:2]) // 3 if margin else 0
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        start = time.perf_counter()
        faces = detector.detect(padded)
        times.append((time.perf_counter() - start) * 1000)
        found.append([(f.score, holds(f.box - pad, points)) for f in faces])
    return found, times


def summary(plain: list, margins: list, policy: str, threshold: float) -> dict[str, float]:
    """Hit rate (the largest face at or over `threshold` is the right one) and the rates of
    photos with no face and with a wrong face, for a policy: "plain" photos as they are,
    "margins" always with margins, "retry" with margins only when nothing was found."""
    hits = misses = wrong = 0
    for faces_plain, faces_margins in zip(plain, margins, strict=True):
        kept = [f for f in faces_plain if f[0] >= threshold]
        if policy == "margins" or (policy == "retry" and not kept):
            kept = [f for f in faces_margins if f[0] >= threshold]
        if not kept:
            misses += 1
        elif kept[0][1]:
            hits += 1
        else:
            wrong += 1
    n = len(plain)
    return {
        "hit": round(hits / n, 4),
        "no_face": round(misses / n, 4),
        "wrong": round(wrong / n, 4),
    }


def measure(detector: YuNetDetector, items: list[tuple[Path, np.ndarray]]) -> dict:
    plain, plain_ms = detections(detector, items, margin=False)
    margins, margins_ms = detections(detector, items, margin=True)
    return {
        "photos": len(items),
        **{
            policy: {f"{t:.1f}": summary(plain, margins, policy, t) for t in THRESHOLDS}
            for policy in ("plain", "margins", "retry")
        },
        "median_ms": {
            "plain": round(float(np.median(plain_ms)), 2),
            "margins": round(float(np.median(margins_ms)), 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utk-every", type=int, default=10)
    args = parser.parse_args()
    sets = {"cfp_profiles_001_400": cfp_profiles(), "utkface": utkface_crops(args.utk_every)}
    figures: dict = {"score_threshold_in_use": 0.6}
    for model in sorted(YUNET.glob("*.onnx")):
        detector = YuNetDetector(model, score_threshold=THRESHOLDS[0])
        figures[model.name] = {name: measure(detector, items) for name, items in sets.items()}
        print(model.name, figures[model.name], flush=True)
    save("detector_choice", figures)


if __name__ == "__main__":
    main()
