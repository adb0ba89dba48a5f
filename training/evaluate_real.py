"""The real-photo yardstick: the service on held-out real photos, against their fitted heads.

    python -m training.evaluate_real [--weights weights/facerecon.pt] \
        [--fits runs/realfit/fits.pt] [--out bench/results/real_yardstick.json] \
        [--picture docs/real_yardstick.png]

Held-out photos only by default (never trained on, nothing tuned on them; `--split
validation` runs the held-in photos training leaves out, to make choices on): CFP people 401-450
(`--frontals` frontal photos each, default 2, and all 4 profiles) and 300-W `helen_test`.
Labels are the multi-view ICT fits of `python -m training.realfit.build`. Each photo goes
through the service's own `Reconstructor` (YuNet finds the face, as `make run` does; a
photo where it finds none is taken whole) with the default options plus registration, and
is scored per view type (CFP frontal / CFP profile / HELEN):

- pose: |yaw error| against the fit, median and 90th percentile, and the median |yaw|: of
  the answer (with registration, the fitted face model's pose) and, as `unregistered_*`,
  of the answer without registration (the landmark head's where there is one, else the
  volume network's; with a head, `volume_*` is the volume network's alone);
- landmarks (HELEN): 68-point NME of the registration's 2D landmarks, over the outer-eye
  distance and over sqrt(w h) of the landmark box; and of the network's landmark head's own
  points (over the outer-eye distance), where it has one;
- shape: VRN's error: the fitted head's facial-mask vertices rigidly aligned (ICP) to the
  predicted surface, their mean distance to it over the 3D outer-interocular distance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from scipy.spatial import cKDTree

from facerecon.face_model import ICT_VERTEX_RANGES
from facerecon.reconstructor import ReconstructOptions, Reconstructor
from training.engine.facemodel import load_face_model
from training.realcheck import row
from training.realfit.annotations import is_validation
from training.realfit.targets import posed_vertices

REPO = Path(__file__).resolve().parents[1]
FACIAL_MASK = np.arange(*ICT_VERTEX_RANGES["narrow_face"])  # first in every kept ordering


SPLITS = ("held_out", "validation")


def split_photos(photos: list[dict], frontals: int, split: str = "held_out") -> list[int]:
    """Indices of the split's photos: "held_out" (the yardstick) or "validation" (held-in
    photos training leaves out, for making choices: `annotations.is_validation`)."""
    keep = []
    for i, p in enumerate(photos):
        if split == "held_out" and not p["held_out"]:
            continue
        if split == "validation" and not (
            not p["held_out"] and is_validation(p["path"], p["subset"], p["person"])
        ):
            continue
        if p["scheme"] == "cfp_frontal" and int(p["path"].split("/")[-1][:2]) > frontals:
            continue
        keep.append(i)
    return keep


def view_type(photo: dict) -> str:
    if photo["scheme"] == "ibug68":
        return "helen_test" if photo["held_out"] else "300w_validation"
    return photo["scheme"]


def rigid_icp(source: np.ndarray, target: np.ndarray, iterations: int = 30) -> np.ndarray:
    """`source` (N, 3) moved rigidly onto the surface sampled by `target` (M, 3) vertices;
    starts with the front-most points level. Returns each moved point's distance."""
    tree = cKDTree(target)
    moved = source + np.array([0.0, 0.0, target[:, 2].max() - source[:, 2].max()])
    for _ in range(iterations):
        distance, nearest = tree.query(moved)
        keep = distance <= np.quantile(distance, 0.9)  # trim the worst tenth (rims, hair)
        a, b = moved[keep], target[nearest[keep]]
        ca, cb = a.mean(0), b.mean(0)
        u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
        d = np.sign(np.linalg.det(vt.T @ u.T))
        rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
        moved = (moved - ca) @ rotation.T + cb
    return tree.query(moved)[0]


def evaluate(
    reconstructor: Reconstructor,
    shared: Path,
    fits_path: Path,
    frontals: int,
    split: str = "held_out",
) -> dict:
    cache = torch.load(fits_path, map_location="cpu", weights_only=False)
    photos, fits = cache["photos"], cache["fits"]
    model = load_face_model(shared / "facemodel")
    options = ReconstructOptions(registration=True, frontal=False)
    rows: dict[str, list[dict]] = {}
    whole_photo = 0
    chosen = split_photos(photos, frontals, split)
    for i in chosen:
        p = photos[i]
        image = cv2.cvtColor(cv2.imread(str(shared / p["path"])), cv2.COLOR_BGR2RGB)
        face = reconstructor.prepare(image)  # no face found: the whole photo
        (volume,) = reconstructor.predict([face])
        result = reconstructor.finish(face, volume, options)
        whole_photo += result.face_source == "whole_image"
        fitted_yaw = fits["yaw"][i].item()
        network_points = face.predicted_landmarks
        unregistered_yaw = reconstructor.head_pose(volume, result.mesh, network_points).yaw
        record = {
            "yaw": result.pose.yaw,
            "yaw_error": abs(result.pose.yaw - fitted_yaw),
            "unregistered_yaw": unregistered_yaw,
            "unregistered_yaw_error": abs(unregistered_yaw - fitted_yaw),
        }
        if network_points is not None:  # the volume's pose, which the landmarks' replaces
            volume_yaw = reconstructor.head_pose(volume, result.mesh).yaw
            record["volume_yaw_error"] = abs(volume_yaw - fitted_yaw)
        f = {k: v[i : i + 1] for k, v in fits.items() if isinstance(v, torch.Tensor)}
        head = posed_vertices(model, f["identity"], f["expression"], f["rotation"], f["scale"],
                              f["translation"])[0].numpy()  # fmt: skip
        lm = head[model.landmarks68.numpy()]
        interocular = np.linalg.norm(lm[36] - lm[45])
        distance = rigid_icp(head[FACIAL_MASK].astype(np.float64), result.mesh.vertices)
        record["shape_error"] = float(distance.mean() / interocular)
        if p["scheme"] == "ibug68":
            truth = np.asarray(p["points"])
            error = np.linalg.norm(result.registration.landmarks68_2d - truth, axis=1).mean()
            record["nme_outer_eye"] = float(error / np.linalg.norm(truth[36] - truth[45]))
            record["nme_box"] = float(error / np.sqrt(np.prod(np.ptp(truth, axis=0))))
            if result.landmarks68 is not None:  # the landmark head's own points
                error = np.linalg.norm(result.landmarks68 - truth, axis=1).mean()
                record["nme_network_outer_eye"] = float(
                    error / np.linalg.norm(truth[36] - truth[45])
                )
        rows.setdefault(view_type(p), []).append(record)
    report = {"photos": sum(len(r) for r in rows.values()), "taken_whole": whole_photo}
    for kind, records in rows.items():
        out = {"n": len(records)}
        keys = ("yaw_error", "unregistered_yaw_error", "volume_yaw_error", "shape_error",
                "nme_outer_eye", "nme_box", "nme_network_outer_eye")  # fmt: skip
        for key in keys:
            values = np.array([r[key] for r in records if key in r])
            if len(values):
                out[key] = {"median": round(float(np.median(values)), 4),
                            "p90": round(float(np.quantile(values, 0.9)), 4),
                            "mean": round(float(values.mean()), 4)}  # fmt: skip
        out["median_abs_yaw"] = round(float(np.median([abs(r["yaw"]) for r in records])), 2)
        out["median_abs_unregistered_yaw"] = round(
            float(np.median([abs(r["unregistered_yaw"]) for r in records])), 2
        )
        out["median_abs_yaw_fitted"] = round(float(np.median([
            abs(fits["yaw"][i].item()) for i in chosen if view_type(photos[i]) == kind
        ])), 2)  # fmt: skip
        report[kind] = out
    return report


def picture(reconstructor: Reconstructor, shared: Path, out: Path) -> None:
    """Held-out photos (CFP 401-450 frontal and profile, HELEN test): crop | frontal view |
    surface | surface from the side."""
    paths = [f"realfaces/cfp/images/{n}/frontal/01.jpg" for n in ("405", "430")]
    profiles = (("405", 1), ("412", 2), ("430", 3), ("447", 1))
    paths += [f"realfaces/cfp/images/{n}/profile/0{k}.jpg" for n, k in profiles]
    helen = sorted((shared / "realfaces/300w/images/helen_test").glob("*.jpg"))
    paths += [str(p.relative_to(shared)) for p in helen[::110][:2]]
    rows = [row(reconstructor, np.asarray(Image.open(shared / p).convert("RGB"))) for p in paths]
    half = (len(rows) + 1) // 2
    left, right = rows[:half], rows[half:] + [np.full_like(rows[0], 255)] * (2 * half - len(rows))
    Image.fromarray(np.concatenate([np.concatenate(left), np.concatenate(right)], 1)).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default=str(REPO / "weights/facerecon.pt"))
    parser.add_argument("--pose-weights", default=None)
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--fits", default=str(REPO / "runs/realfit/fits.pt"))
    parser.add_argument("--frontals", type=int, default=2, help="frontal photos per CFP person")
    parser.add_argument("--out", default=str(REPO / "bench/results/real_yardstick.json"))
    parser.add_argument("--picture", default=None, help="also draw held-out photos to this PNG")
    parser.add_argument("--split", choices=SPLITS, default="held_out",
                        help="validation: held-in photos training leaves out")  # fmt: skip
    args = parser.parse_args()
    shared = Path(args.shared)
    reconstructor = Reconstructor(
        args.weights, device="cpu", detector=shared / "models/yunet/yunet_n_dynamic.onnx",
        face_model=shared / "facemodel/ict_face_light.npz", pose_weights=args.pose_weights,
    )  # fmt: skip
    started = time.time()
    report = evaluate(reconstructor, shared, Path(args.fits), args.frontals, args.split)
    report["split"] = args.split
    report["weights"] = {"path": args.weights, "sha256": reconstructor.info.sha256}
    report["seconds"] = round(time.time() - started, 1)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    if args.picture:
        picture(reconstructor, shared, Path(args.picture))


if __name__ == "__main__":
    main()
