"""How well a profile's annotated points fix its yaw: `python -m training.realfit.yaw_ambiguity`.

The mean ICT face's points that CFP marks on a profile (the visible half's brow, eye, nose
and mouth: `correspondence.SCHEMES["cfp_profile"]`, less the jaw contour, which slides) are
projected at one yaw and fitted, by a similarity, with the same points projected at another:
the mean residual, over the points' box side, is how far apart the two yaws look. Where it
is below the annotation noise the fitter assumes (`FitSettings.noise`), the landmarks alone
cannot tell those yaws apart, and a fitted profile yaw is set by the shape prior and the
starts as much as by the photo.

What the points leave open, the outline settles: `far_side_beyond_outline_cm` is how far
the mean face's far eye, nose wing and mouth corner (`correspondence.FAR_SIDE` mirrored)
project beyond the polyline of the profile's silhouette points (`Scheme.outline`), the
fitter's one-sided `HiddenSide` term. Writes bench/results/profile_yaw_ambiguity.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facerecon.pose import reference_landmarks68, rotation_matrix
from training.engine.facemodel import IBUG68_MIRROR
from training.realfit.correspondence import FAR_SIDE, SCHEMES
from training.realfit.fitter import FitSettings

REPO = Path(__file__).resolve().parents[2]
YAWS = (40.0, 50.0, 60.0, 70.0, 80.0, 90.0)


def projected(points: np.ndarray, yaw: float) -> np.ndarray:
    """(N, 2) weak-perspective image points (y down) of model points turned by `yaw`."""
    camera = points @ rotation_matrix(yaw, 0.0).T
    return np.stack([camera[:, 0], -camera[:, 1]], 1)


def apart(a: np.ndarray, b: np.ndarray) -> float:
    """Mean residual of `b` fitted to `a` by a similarity, over the side of `a`'s box."""
    a, b = a - a.mean(0), b - b.mean(0)
    u, s, vt = np.linalg.svd(b.T @ a)
    residual = a - (s.sum() / (b**2).sum()) * b @ (u @ vt)
    return float(np.linalg.norm(residual, axis=1).mean() / np.sqrt(np.prod(np.ptp(a, axis=0))))


def beyond_outline(points: np.ndarray, outline: list[int], far: list[int], yaw: float) -> float:
    """cm by which the far points at `yaw` reach past the outline, in the facing direction
    (negative: all behind it), each compared with the outline at its own height."""
    xy = projected(points, yaw)
    line = xy[outline][np.argsort(xy[outline, 1])]
    x_line = np.interp(xy[far, 1], line[:, 1], line[:, 0])  # clamped beyond the ends
    facing = np.sign(line[:, 0].mean() - xy[:, 0].mean())
    return float((facing * (xy[far, 0] - x_line)).max())


def main() -> None:
    scheme = SCHEMES["cfp_profile"]
    fixed = [i for k, i in enumerate(scheme.ibug) if k not in scheme.contour]
    # yaw > 0 turns the face to the image's right: the subject's right half (the iBUG
    # indices as defined on a frontal face) faces the camera
    points = reference_landmarks68()[fixed]
    table = {f"{y0:g}": {f"{y:g}": round(apart(projected(points, y0), projected(points, y)), 4)
                         for y in YAWS} for y0 in YAWS}  # fmt: skip
    reference = reference_landmarks68()
    outline = [scheme.ibug[k] for k in scheme.outline]
    far = [IBUG68_MIRROR[i] for i in FAR_SIDE]
    beyond = {f"{y:g}": round(beyond_outline(reference, outline, far, y), 2) for y in YAWS}
    report = {"about": " ".join(__doc__.split("\n\n")[1:3]).replace("\n", " "),
              "points": len(fixed), "noise": FitSettings().noise, "residual": table,
              "far_side_beyond_outline_cm": beyond}  # fmt: skip
    out = REPO / "bench/results/profile_yaw_ambiguity.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    for y0, row in table.items():
        print(f"yaw {y0:>2}:", "  ".join(f"{y}: {v:.3f}" for y, v in row.items()))
    print("far side beyond the outline (cm):", beyond)


if __name__ == "__main__":
    main()
