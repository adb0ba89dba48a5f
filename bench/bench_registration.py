"""Registration of the ICT face model on held-out synthetic faces: landmarks, pose, time.

`python -m bench.bench_registration [--faces 60] [--network-faces 60]` writes
bench/results/registration.json. Needs ../shared (face model, photos for the engine).

Ground truth comes from the data engine (training/engine) with a fixed seed and |yaw|
balanced over [0, 30), [30, 60), [60, 90]: the true 68 landmarks (the project's map's
vertices, crop pixels; the points the registration reports) and the true pose. Registered:
- "ground_truth_volume": the engine's target volume, turned into a mesh as the service does:
  this isolates the registration's own error from the network's;
- "network_volume": the volume a trained checkpoint predicts from the rendered photo
  (weights/facerecon.pt, else runs/vrn-light-cpu/model.pt; skipped if neither exists);
- "network_volume_detector_landmarks": the same, with the 5 landmarks YuNet finds on the
  rendered photo (padded by 48 pixels, as YuNet misses faces that touch the frame) given to
  the fit, as the service does when it detects the face (skipped without the detector);
- "network_volume_network_landmarks": the same, with the network's own 68 points (its
  landmark head, where it has one) given to the fit, as the service does since round 3.
Each fit is seeded as in the Reconstructor: by the pose of the network's 68 points where it
has a landmark head (the network arms), else by the learned head pose from the volume
(weights/pose.pt), or by the geometric `facerecon.pose.estimate_pose` without it.

Metrics, per yaw bucket and overall:
- nme2d_box: mean 2D landmark distance / sqrt(w * h) of the true landmarks' 2D box (the
  AFLW2000-3D convention of 3DDFA and SynergyNet);
- nme3d_box: the same in 3D; nme3d_interocular: 3D, over the outer eye corners' distance;
- pose_mae: mean |error| of yaw, pitch, roll in degrees (and each angle's);
- fit_ms: `register` wall time per face (one torch thread), the best of `--repeats` fits of
  the same face (the machine is shared: other jobs only ever add time, so the least is the
  fit's own cost; the timeit convention) and fit_ms_first_median, each face's first fit;
- batch_fit_ms_per_face: `register_batch` of each engine batch (6 faces) at once, wall time
  over the faces, best of `--repeats` (ground-truth volumes only).

The engine mirrors half its samples (image, volume, landmark positions and yaw/roll signs)
but keeps the landmark labels; a mirrored sample's landmark 36 then marks the mirrored
person's *left* eye corner. Such samples are recognised by their landmarks' handedness and
relabelled with the Multi-PIE mirror permutation before comparing.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.results_io import save
from facerecon.detect import load_detector
from facerecon.face_model import load_face_model
from facerecon.mesh import volume_to_mesh
from facerecon.models.volume_pose import estimate_volume_pose
from facerecon.models.vrn import heatmap_points
from facerecon.pose import estimate_pose, pose_from_landmarks
from facerecon.reconstructor import load_pose_model
from facerecon.registration import register, register_batch
from training.engine.facemodel import IBUG68_MIRROR

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SEED = 20170  # the held-out evaluation seed of training/evaluate.py
YAW_BUCKETS = [(0.0, 30.0), (30.0, 60.0), (60.0, 90.0)]
CHECKPOINTS = [REPO / "weights" / "facerecon.pt", REPO / "runs" / "vrn-light-cpu" / "model.pt"]
YUNET = SHARED / "models" / "yunet" / "yunet_s_dynamic.onnx"
DETECTOR_PAD = 48


def map_rows(model) -> np.ndarray:
    """Rows of `Batch.face_vertices` holding the project's 68-point map
    (`FaceModel.annotated68`, the points the registration reports): the truth here."""
    return np.searchsorted(model.face_vertices.numpy(), model.annotated68.numpy())


def true_labels(landmarks: np.ndarray) -> np.ndarray:
    """Relabel a mirrored sample's landmarks (see the module docstring)."""
    across = landmarks[45] - landmarks[36]  # towards the subject's left, unless mirrored
    up = landmarks[27] - landmarks[8]  # chin to nose bridge (y down: points up the face)
    forward = landmarks[30] - landmarks[[36, 45, 48, 54]].mean(0)
    mirrored = np.linalg.det(np.stack([across, up, forward])) > 0
    return landmarks[IBUG68_MIRROR] if mirrored else landmarks


def face_errors(result, landmarks: np.ndarray, pose: tuple[float, float, float]) -> dict:
    truth = true_labels(landmarks)
    width, height = np.ptp(truth[:, :2], axis=0)
    box = float(np.sqrt(width * height))
    interocular = float(np.linalg.norm(truth[36] - truth[45]))
    distance3d = np.linalg.norm(result.landmarks68_3d - truth, axis=1).mean()
    distance2d = np.linalg.norm(result.landmarks68_2d - truth[:, :2], axis=1).mean()
    fitted = (result.pose.yaw, result.pose.pitch, result.pose.roll)
    angles = np.abs(np.array(fitted) - np.array(pose))
    return {
        "nme2d_box": float(distance2d / box),
        "nme3d_box": float(distance3d / box),
        "nme3d_interocular": float(distance3d / interocular),
        "yaw_error": float(angles[0]),
        "pitch_error": float(angles[1]),
        "roll_error": float(angles[2]),
    }


def register_volumes(
    volumes, batch, face_model, pose_model, first: int, repeats: int, rows, landmarks=None,
    network_points=None,
) -> list[dict]:  # fmt: skip
    """Register each volume's mesh; score it against the true points (`Batch.face_vertices`
    at `rows`: `map_rows`). With the network's 68 `network_points` the fit starts from their
    pose (`Reconstructor.head_pose`)."""
    records = []
    for i, volume in enumerate(volumes):
        mesh = volume_to_mesh(volume)
        truth = (float(batch.yaw[i]), float(batch.pitch[i]), float(batch.roll[i]))
        if mesh.num_faces == 0:
            records.append({"index": first + i, "yaw": truth[0], "empty": True})
            continue
        start = time.perf_counter()
        if network_points is not None:
            estimate = pose_from_landmarks(network_points[i])
        elif pose_model is None:
            estimate = estimate_pose(mesh)
        else:
            estimate = estimate_volume_pose(pose_model, volume)
        pose_ms = (time.perf_counter() - start) * 1000.0
        given = None if landmarks is None else landmarks[i]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = register(mesh, face_model, estimate, landmarks=given)
            times.append((time.perf_counter() - start) * 1000.0)
        init = np.abs(np.array([estimate.yaw, estimate.pitch, estimate.roll]) - truth)
        records.append({
            "index": first + i, "yaw": truth[0], "fit_ms": min(times), "fit_ms_first": times[0],
            "pose_estimate_ms": pose_ms,
            "estimate_pose_mae": float(init.mean()), "fit_error_px": result.fit_error,
            "landmarks_given": given is not None,
            **face_errors(result, batch.face_vertices[i, rows].cpu().numpy(), truth),
        })  # fmt: skip
    return records


def batch_fit_ms(volumes, face_model, pose_model, repeats: int) -> float | None:
    """Wall time per face of one `register_batch` over all these volumes (best of repeats)."""
    meshes = [volume_to_mesh(volume) for volume in volumes]
    if any(mesh.num_faces == 0 for mesh in meshes):
        return None
    estimates = [
        estimate_pose(mesh) if pose_model is None else estimate_volume_pose(pose_model, volume)
        for mesh, volume in zip(meshes, volumes, strict=True)
    ]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        register_batch(meshes, face_model, estimates)
        times.append((time.perf_counter() - start) * 1000.0 / len(meshes))
    return min(times)


def detected_five_points(detector, images: torch.Tensor) -> list[np.ndarray | None]:
    """YuNet's 5 landmarks on each rendered (B, 3, H, W) photo, in its pixels, or None."""
    found = []
    for image in images:
        rgb = (image.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
        padded = np.pad(rgb, ((DETECTOR_PAD,) * 2, (DETECTOR_PAD,) * 2, (0, 0)), mode="edge")
        detections = detector.detect(padded)
        found.append(
            np.asarray(detections[0].landmarks, np.float64) - DETECTOR_PAD if detections else None
        )
    return found


def summarise(records: list[dict]) -> dict:
    def stats(rows: list[dict]) -> dict:
        rows = [r for r in rows if not r.get("empty")]
        if not rows:
            return {"count": 0}

        def mean(key: str) -> float:
            return float(np.mean([r[key] for r in rows]))

        pose = np.array([[r["yaw_error"], r["pitch_error"], r["roll_error"]] for r in rows])
        return {
            "count": len(rows),
            "nme2d_box": mean("nme2d_box"),
            "nme3d_box": mean("nme3d_box"),
            "nme3d_interocular": mean("nme3d_interocular"),
            "nme2d_box_median": float(np.median([r["nme2d_box"] for r in rows])),
            "failures_nme2d_box_over_10pct": int(sum(r["nme2d_box"] > 0.1 for r in rows)),
            "pose_mae": float(pose.mean()),
            "yaw_mae": float(pose[:, 0].mean()),
            "pitch_mae": float(pose[:, 1].mean()),
            "roll_mae": float(pose[:, 2].mean()),
            "estimate_pose_mae": mean("estimate_pose_mae"),
            "fit_ms_mean": mean("fit_ms"),
            "fit_ms_median": float(np.median([r["fit_ms"] for r in rows])),
            "fit_ms_first_median": float(np.median([r["fit_ms_first"] for r in rows])),
            "pose_estimate_ms_mean": mean("pose_estimate_ms"),
        }

    buckets = {}
    for low, high in YAW_BUCKETS:
        inside = [r for r in records if low <= abs(r["yaw"]) < high or abs(r["yaw"]) == high == 90]
        buckets[f"[{low:.0f},{high:.0f}{']' if high == 90 else ')'}"] = stats(inside)
    return {"all": stats(records), "yaw_buckets": buckets,
            "empty_meshes": sum(bool(r.get("empty")) for r in records)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=60)
    parser.add_argument("--network-faces", type=int, default=60)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="fits per face, best one timed")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facerecon-bench-cache"))
    args = parser.parse_args()

    from training.engine.synth import SyntheticFaces
    from training.engine.voxelize import fill_volume

    torch.set_num_threads(1)  # the fit is many small ops: one thread, no stalls on a busy CPU
    face_model = load_face_model(SHARED / "facemodel" / "ict_face_light.npz")
    engine = SyntheticFaces.from_shared(
        SHARED, args.cache, "heldout", photo_limit=64, seed=SEED, yaw_buckets=YAW_BUCKETS
    )
    truth_rows = map_rows(engine.model)
    checkpoint = next((c for c in CHECKPOINTS if c.is_file()), None)
    network, weights = None, None
    if checkpoint is not None and args.network_faces > 0:
        from facerecon.models import load_checkpoint

        network, info = load_checkpoint(checkpoint, "cpu")
        network.eval()
        weights = {"path": str(checkpoint.relative_to(REPO)), "sha256": info["sha256"],
                   "version": info["meta"].get("version")}  # fmt: skip

    pose_model = load_pose_model(None, CHECKPOINTS[0])
    detector = load_detector(YUNET) if YUNET.is_file() else None
    truth_records, network_records, detector_records, own_records = [], [], [], []
    batch_ms = []
    fit = {"face_model": face_model, "pose_model": pose_model, "repeats": args.repeats}
    for index, first in enumerate(range(0, args.faces, args.batch)):
        batch = engine.batch(index, min(args.batch, args.faces - first))
        volumes = fill_volume(batch.front, batch.back).float().numpy()
        truth_records += register_volumes(volumes, batch, first=first, rows=truth_rows, **fit)
        batch_ms.append(batch_fit_ms(volumes, **fit))
        if network is not None and first < args.network_faces:
            with torch.inference_mode():
                stacks, heatmaps = network.forward_heads(batch.image)
                upsampled = F.interpolate(stacks[-1], scale_factor=4.0, mode="bilinear")
                predicted = torch.sigmoid(upsampled).float().numpy()
            points = None if heatmaps is None else list(heatmap_points(heatmaps).double().numpy())
            arm = {**fit, "first": first, "rows": truth_rows, "network_points": points}
            network_records += register_volumes(predicted, batch, **arm)
            if points is not None:
                own_records += register_volumes(predicted, batch, landmarks=points, **arm)
            if detector is not None:
                five = detected_five_points(detector, batch.image)
                detector_records += register_volumes(predicted, batch, landmarks=five, **arm)
        print(f"{first + len(batch.yaw)} faces", flush=True)

    figures = {
        "machine_note": f"load average at the end {os.getloadavg()[0]:.1f} "
        f"(on {os.cpu_count()} cores); one torch thread",
        "seed": SEED,
        "network_weights": weights,
        "pose_seed": (
            "network arms: the landmark head's 68 points where it has one; "
            "ground-truth volumes: "
            + ("learned (weights/pose.pt)" if pose_model else "geometric estimate_pose")
        ),
        "ground_truth_volume": summarise(truth_records),
        "batch_fit_ms_per_face": {
            "batch": args.batch,
            "median": float(np.median([ms for ms in batch_ms if ms is not None])),
            "batches": batch_ms,
        },
        "network_volume": (
            {"checkpoint": str(checkpoint.relative_to(REPO)), **summarise(network_records)}
            if network_records
            else None
        ),
        "network_volume_detector_landmarks": (
            {
                "detector": "YuNet (5 points)",
                "detected": sum(r.get("landmarks_given", False) for r in detector_records),
                **summarise(detector_records),
            }
            if detector_records
            else None
        ),
        "network_volume_network_landmarks": (
            {"landmarks": "the network's landmark head (68 points)", **summarise(own_records)}
            if own_records
            else None
        ),
        "faces": {
            "ground_truth_volume": truth_records,
            "network_volume": network_records,
            "network_volume_detector_landmarks": detector_records,
            "network_volume_network_landmarks": own_records,
        },
    }
    save("registration", figures)


if __name__ == "__main__":
    main()
