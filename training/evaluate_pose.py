"""Held-out head-pose accuracy: the learned `VolumePose` against the geometric `estimate_pose`.

`python -m training.evaluate_pose --pose weights/pose.pt --vrn weights/facerecon.pt --out X.json`

The set is `training.evaluate`'s: engine seed EVAL_SEED, held-out photo textures, |yaw|
cycling through [0, 30), [30, 60), [60, 90]. Each head's pose is estimated from
- its ground-truth volume (the exact solid, as the engine fills it), and
- the VRN checkpoint's predicted volume for its image (`--vrn`),
by both estimators; errors are the rotation angle between estimate and truth and the
absolute yaw / pitch / roll differences. `--gt-only N` adds N more heads (geometry only,
learned estimator only: it is cheap).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from facerecon.mesh import volume_to_mesh
from facerecon.models import load_checkpoint
from facerecon.models.volume_pose import estimate_volume_pose
from facerecon.pose import Pose, estimate_pose
from training.engine.synth import EngineConfig, SyntheticFaces
from training.engine.voxelize import fill_volume, pooled_volume
from training.evaluate import EVAL_SEED, YAW_BUCKETS
from training.pose_data import GeometryOnlyFaces


def pose_errors(estimate: Pose, truth: Pose) -> dict[str, float]:
    """Rotation angle between the two and absolute yaw / pitch / roll differences, degrees."""
    relative = estimate.matrix().T @ truth.matrix()
    angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0)))

    def wrapped(a: float, b: float) -> float:
        return abs((a - b + 180.0) % 360.0 - 180.0)

    return {
        "angle": float(angle),
        "yaw": wrapped(estimate.yaw, truth.yaw),
        "pitch": wrapped(estimate.pitch, truth.pitch),
        "roll": wrapped(estimate.roll, truth.roll),
    }


def bucket_of(yaw: float) -> str:
    for low, high in YAW_BUCKETS:
        if low <= abs(yaw) < high or (high == 90 and abs(yaw) <= 90):
            return f"[{low:.0f},{high:.0f}{']' if high == 90 else ')'}"
    raise ValueError(yaw)


def summarise(records: list[dict], keys: list[str]) -> dict:
    """Per estimator: mean errors overall and per yaw bucket (MAE = mean of yaw/pitch/roll)."""

    def stats(rows: list[dict], key: str) -> dict:
        errors = {m: float(np.mean([r[key][m] for r in rows])) for m in rows[0][key]}
        errors["mae"] = (errors["yaw"] + errors["pitch"] + errors["roll"]) / 3
        return {"count": len(rows), **{k: round(v, 2) for k, v in errors.items()}}

    result = {}
    for key in keys:
        result[key] = {"overall": stats(records, key)}
        for name in dict.fromkeys(r["bucket"] for r in sorted(records, key=lambda r: r["bucket"])):
            result[key][name] = stats([r for r in records if r["bucket"] == name], key)
    return result


@torch.no_grad()
def evaluate(
    pose_weights: str, vrn_weights: str, shared: str, cache: str, count: int, gt_only: int
) -> dict:
    pose_model, pose_info = load_checkpoint(pose_weights)
    vrn, vrn_info = load_checkpoint(vrn_weights)
    engine = SyntheticFaces.from_shared(
        shared, cache, "heldout", seed=EVAL_SEED, yaw_buckets=YAW_BUCKETS
    )
    records, seconds = [], {"learned": [], "geometric": []}
    for index, start in enumerate(range(0, count, 3)):
        batch = engine.batch(index, min(3, count - start))
        truth_volumes = fill_volume(batch.front, batch.back).float()
        predicted_volumes = torch.sigmoid(vrn(batch.image))
        for i in range(len(batch.image)):
            truth = Pose(float(batch.yaw[i]), float(batch.pitch[i]), float(batch.roll[i]))
            record = {"yaw": truth.yaw, "bucket": bucket_of(truth.yaw)}
            for source, volume in (("gt", truth_volumes[i]), ("vrn", predicted_volumes[i])):
                volume = volume.numpy()
                started = time.perf_counter()
                learned = estimate_volume_pose(pose_model, volume)
                seconds["learned"].append(time.perf_counter() - started)
                mesh = volume_to_mesh(volume)
                started = time.perf_counter()
                geometric = estimate_pose(mesh) if mesh.num_faces else None
                seconds["geometric"].append(time.perf_counter() - started)
                record[f"learned_{source}"] = pose_errors(learned, truth)
                # no surface: count it as the worst case rather than dropping the head
                record[f"geometric_{source}"] = (
                    pose_errors(geometric, truth)
                    if geometric is not None
                    else {"angle": 180.0, "yaw": 180.0, "pitch": 90.0, "roll": 180.0}
                )
            records.append(record)
            print(json.dumps({k: v if not isinstance(v, dict) else round(v["angle"], 1)
                              for k, v in record.items()}), flush=True)  # fmt: skip
    keys = ["learned_gt", "geometric_gt", "learned_vrn", "geometric_vrn"]
    result = {
        "eval_seed": EVAL_SEED,
        "pose_weights": {
            "sha256": pose_info["sha256"],
            "meta_steps": pose_info["meta"].get("steps"),
        },
        "vrn_weights": {
            "variant": vrn_info["variant"],
            "sha256": vrn_info["sha256"],
            "steps": vrn_info["meta"].get("steps"),
        },  # fmt: skip
        "heads": count,
        "errors_deg": summarise(records, keys),
        "ms_per_face": {k: round(1000 * float(np.median(v)), 2) for k, v in seconds.items()},
    }
    if gt_only:
        result["learned_gt_more_heads"] = learned_on_geometry(pose_model, shared, gt_only)
    return result


def learned_on_geometry(pose_model: torch.nn.Module, shared: str, count: int) -> dict:
    """The learned estimator on `count` more held-out ground-truth heads (no images)."""
    engine = GeometryOnlyFaces.from_shared_model(shared, EngineConfig(), EVAL_SEED)
    engine.yaw_buckets = YAW_BUCKETS
    records = []
    for index, start in enumerate(range(0, count, 25)):
        batch = engine.batch(1000 + index, min(25, count - start))
        pooled = pooled_volume(batch.front, batch.back)
        for i in range(len(pooled)):
            truth = Pose(float(batch.yaw[i]), float(batch.pitch[i]), float(batch.roll[i]))
            learned = estimate_volume_pose(pose_model, pooled[i])
            records.append(
                {"bucket": bucket_of(truth.yaw), "learned_gt": pose_errors(learned, truth)}
            )
    return summarise(records, ["learned_gt"])["learned_gt"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pose", default="weights/pose.pt")
    parser.add_argument("--vrn", required=True, help="VRN checkpoint for predicted volumes")
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--cache", default="runs/cache")
    parser.add_argument("--limit", type=int, default=36, help="heads with images (default 36)")
    parser.add_argument("--gt-only", type=int, default=0, help="extra ground-truth-only heads")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = evaluate(args.pose, args.vrn, args.shared, args.cache, args.limit, args.gt_only)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
