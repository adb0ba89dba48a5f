"""Held-out synthetic evaluation: volume IoU and the VRN paper's NME, per yaw bucket.

`python -m training.evaluate --checkpoint runs/vrn-light-cpu/model.pt --out eval.json`

The set is fixed: engine seed EVAL_SEED, textures from the held-out UTKFace photos, |yaw|
cycling through the buckets [0, 30), [30, 60), [60, 90] so they are balanced. NME (Jackson
et al. 2017): the mean distance from each ground-truth face-region vertex inside the
volume to the predicted surface (the 0.5 iso-surface at full resolution; the exact distance
to its triangles), after rigid ICP, divided by the ground-truth outer interocular distance
(landmarks 36 and 45), all in crop pixels. `nme_service_mesh` is the same for the mesh the
service returns (`facerecon.mesh.surface_mesh` of the network's coarse logits: two height
maps). With a landmark head, `landmark_nme`: the mean distance of its 68 points from the
engine's exact ones over sqrt(w h) of their box (2D, crop pixels; as AFLW2000-3D is scored).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from scipy.spatial import cKDTree

from facerecon.mesh import Mesh, surface_mesh, volume_to_mesh
from facerecon.models import load_checkpoint
from facerecon.models.vrn import heatmap_points
from facerecon.volume import CoarseVolume
from training.engine.synth import SLICES, SyntheticFaces
from training.engine.voxelize import fill_volume

EVAL_SEED = 20170  # never used for training (training seeds are small integers)
YAW_BUCKETS = [(0.0, 30.0), (30.0, 60.0), (60.0, 90.0)]
ICP_ITERATIONS = 10
NEAREST_VERTICES = 3  # whose triangles are searched for a point's nearest surface point


def kabsch(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimising |R source + t - target|."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    u, _, vt = np.linalg.svd((source - mu_s).T @ (target - mu_t))
    sign = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, sign]) @ u.T
    return rotation, mu_t - rotation @ mu_s


def surface_points(mesh: Mesh) -> np.ndarray:
    """Vertices plus face centroids: a dense sample of the predicted surface (for ICP)."""
    centroids = mesh.vertices[mesh.faces].mean(1)
    return np.concatenate([mesh.vertices, centroids]).astype(np.float64)


def surface_distance(mesh: Mesh, points: np.ndarray, tree: cKDTree | None = None) -> np.ndarray:
    """Exact distance from each point to the mesh's surface: the nearest point of the
    triangles around the point's NEAREST_VERTICES nearest vertices. Distances to surface
    samples alone would add about a third of the sample spacing to every distance."""
    tree = tree or cKDTree(mesh.vertices)
    _, nearest = tree.query(points, NEAREST_VERTICES)
    faces = mesh.faces
    # the triangles around each vertex, padded with a repeat of its first one
    corner = np.argsort(faces.ravel(), kind="stable")
    vertex_of_corner = faces.ravel()[corner]
    starts = np.searchsorted(vertex_of_corner, np.arange(mesh.num_vertices))
    counts = np.bincount(vertex_of_corner, minlength=mesh.num_vertices)
    width = int(counts.max())
    offsets = np.minimum(np.arange(width), np.maximum(counts[:, None] - 1, 0))
    around = corner[np.minimum(starts[:, None] + offsets, len(corner) - 1)] // 3  # (V, width)
    candidates = around[nearest].reshape(len(points), -1)  # (N, k * width)
    triangles = mesh.vertices[faces[candidates]].astype(np.float64)  # (N, C, 3, 3)
    repeated = np.repeat(points, candidates.shape[1], axis=0)
    closest = trimesh.triangles.closest_point(triangles.reshape(-1, 3, 3), repeated)
    distance = np.linalg.norm(closest - repeated, axis=1).reshape(candidates.shape)
    return distance.min(1)


def nme(predicted: Mesh, truth: np.ndarray, interocular: float) -> float:
    """Mean distance from `truth` points to the predicted surface after rigid ICP."""
    if predicted.num_faces == 0:
        return float("nan")
    points = surface_points(predicted)
    tree = cKDTree(points)
    moved = truth.astype(np.float64)
    for _ in range(ICP_ITERATIONS):
        _, nearest = tree.query(moved)
        rotation, translation = kabsch(moved, points[nearest])
        moved = moved @ rotation.T + translation
    return float(surface_distance(predicted, moved).mean() / interocular)


def inside_volume(points: torch.Tensor, size: int) -> torch.Tensor:
    x, y, z = points.unbind(-1)
    half = SLICES // 2
    return (x >= 0) & (x <= size - 1) & (y >= 0) & (y <= size - 1) & (z >= -half) & (z < half)


@torch.no_grad()
def evaluate(
    checkpoint: str | Path, shared: str | Path, cache_dir: str | Path, count: int,
    batch_size: int = 4, device: str = "cpu",
) -> dict:  # fmt: skip
    model, info = load_checkpoint(checkpoint, device)
    engine = SyntheticFaces.from_shared(
        shared, cache_dir, "heldout", seed=EVAL_SEED, device=device, yaw_buckets=YAW_BUCKETS
    )
    records = []
    started = time.time()
    for index, start in enumerate(range(0, count, batch_size)):
        batch = engine.batch(index, min(batch_size, count - start))
        stacks, heatmaps = model.forward_heads(batch.image.to(device))
        logits = stacks[-1].float()
        probability = torch.sigmoid(F.interpolate(logits, scale_factor=4.0, mode="bilinear"))
        if heatmaps is not None:
            points = heatmap_points(heatmaps).cpu()
        target = fill_volume(batch.front, batch.back)
        predicted = probability > 0.5
        for i in range(len(batch.image)):
            inter = (predicted[i] & target[i]).sum().item()
            union = (predicted[i] | target[i]).sum().item()
            truth = batch.face_vertices[i]
            truth = truth[inside_volume(truth, batch.image.shape[-1])].cpu().numpy()
            lm = batch.landmarks[i].cpu().numpy()
            interocular = float(np.linalg.norm(lm[36] - lm[45]))
            volume = probability[i].cpu()
            service_mesh = surface_mesh(CoarseVolume(logits[i].cpu().numpy(), 4))
            record = {
                "yaw": float(batch.yaw[i]),
                "iou": inter / max(union, 1),
                # the volume's own surface (marching cubes at full resolution, as VRN), and
                # the mesh the service returns
                "nme": nme(volume_to_mesh(volume, step=1), truth, interocular),
                "nme_service_mesh": nme(service_mesh, truth, interocular),
            }  # fmt: skip
            if heatmaps is not None:
                exact = batch.points68[i]
                error = (points[i] - exact).norm(dim=-1).mean().item()
                side = (exact.amax(0) - exact.amin(0)).prod().sqrt().item()
                record["landmark_nme"] = error / side  # over sqrt(w h), as AFLW2000-3D's
            records.append(record)
    return summarise(records, info, time.time() - started)


def summarise(records: list[dict], info: dict, seconds: float) -> dict:
    def stats(rows: list[dict]) -> dict:
        def mean(key: str) -> float:
            values = np.array([r[key] for r in rows], dtype=np.float64)
            return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

        return {
            "count": len(rows),
            "iou": float(np.mean([r["iou"] for r in rows])) if rows else float("nan"),
            "nme": mean("nme"),
            "nme_service_mesh": mean("nme_service_mesh"),
            **(
                {"landmark_nme": mean("landmark_nme")} if rows and "landmark_nme" in rows[0] else {}
            ),
            "empty_predictions": int(sum(np.isnan(r["nme"]) for r in rows)),
        }

    buckets = {}
    for low, high in YAW_BUCKETS:
        rows = [
            r
            for r in records
            if low <= abs(r["yaw"]) < high or (high == 90 and abs(r["yaw"]) == 90)
        ]
        buckets[f"[{low:.0f},{high:.0f}{']' if high == 90 else ')'}"] = stats(rows)
    return {
        "checkpoint": {
            "variant": info["variant"],
            "sha256": info["sha256"],
            "steps": info["meta"].get("steps"),
            "samples_seen": info["meta"].get("samples_seen"),
        },  # fmt: skip
        "eval_seed": EVAL_SEED,
        "overall": stats(records),
        "yaw_buckets": buckets,
        "seconds": round(seconds, 1),
        "nme_definition": "mean GT face-vertex to predicted-surface distance (exact, to the "
        "triangles) after rigid ICP / GT 3D outer interocular distance (landmarks 36-45), crop "
        "pixels; nme: the volume's full-resolution iso-surface; nme_service_mesh: the service's "
        "mesh (surface_mesh of the 48 x 48 logits)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--cache", default="runs/cache")
    parser.add_argument("--limit", type=int, default=1200, help="samples (default 1200)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default: print only)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = evaluate(args.checkpoint, args.shared, args.cache, args.limit, args.batch_size,
                      args.device)  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
