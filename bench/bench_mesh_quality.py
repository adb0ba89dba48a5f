"""Issue 18's quality check: the service's height-map mesh against the marching cubes it
replaced, on held-out synthetic faces (training.evaluate's set and NME), fp32 and bf16.

    python -m bench.bench_mesh_quality [--faces 60]

For each face of training.evaluate's held-out set (seed EVAL_SEED, |yaw| buckets balanced),
the shipped network's logits in fp32 and in bf16 (as the service runs it on CPUs with native
bf16); meshes: `volume_to_mesh` of the full volume (marching cubes, 2-voxel blocks: the
service's mesh before issue 18) and `surface_mesh` of the coarse logits (the height maps:
the service's mesh now). NME as training.evaluate (exact distance to the triangles after
rigid ICP, over the outer interocular distance), per |yaw| bucket; the time of each mesh (one
thread, median) and the mean angle between neighbouring faces' normals (lower: smoother;
marching cubes' output is Taubin-smoothed, the height maps are not). Writes
bench/results/mesh_quality.json. About 10 minutes on 2 cores (needs ../shared).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from bench.results_io import save
from facerecon.mesh import surface_mesh, volume_to_mesh
from facerecon.models import fold_batchnorm, load_checkpoint
from facerecon.volume import CoarseVolume
from training.engine.synth import SyntheticFaces
from training.evaluate import EVAL_SEED, YAW_BUCKETS, inside_volume, nme

ROOT = Path(__file__).resolve().parents[1]
MESHES = {
    "marching_cubes": lambda coarse: volume_to_mesh(coarse.probability()),
    "height_maps": surface_mesh,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=int, default=60)
    parser.add_argument("--weights", default=str(ROOT / "weights" / "facerecon.pt"))
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--cache", default="/tmp/facerecon-bench-cache")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    model, info = load_checkpoint(args.weights, "cpu")
    fp32 = fold_batchnorm(model).to(memory_format=torch.channels_last)
    bf16 = load_checkpoint(args.weights, "cpu")[0]
    bf16 = fold_batchnorm(bf16).to(torch.bfloat16, memory_format=torch.channels_last)
    engine = SyntheticFaces.from_shared(args.shared, args.cache, "heldout", seed=EVAL_SEED,
                                        device="cpu", yaw_buckets=YAW_BUCKETS)  # fmt: skip
    records: dict[str, list[tuple]] = {}
    yaws = []
    for index, start in enumerate(range(0, args.faces, 4)):
        batch = engine.batch(index, min(4, args.faces - start))
        x = batch.image.contiguous(memory_format=torch.channels_last)
        logits = {"fp32": fp32.forward_logits(x)[-1].float(),
                  "bf16": bf16.forward_logits(x.to(torch.bfloat16))[-1].float()}  # fmt: skip
        for i in range(len(batch.image)):
            truth = batch.face_vertices[i]
            truth = truth[inside_volume(truth, batch.image.shape[-1])].numpy()
            landmarks = batch.landmarks[i].numpy()
            interocular = float(np.linalg.norm(landmarks[36] - landmarks[45]))
            yaws.append(abs(float(batch.yaw[i])))
            for precision, out in logits.items():
                coarse = CoarseVolume(out[i].contiguous().numpy(), x.shape[-1] // out.shape[-1])
                for name, make in MESHES.items():
                    started = time.perf_counter()
                    mesh = make(coarse)
                    ms = (time.perf_counter() - started) * 1000.0
                    angles = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
                    dihedral = float(np.degrees(angles.face_adjacency_angles).mean())
                    records.setdefault(f"{name}_{precision}", []).append(
                        (nme(mesh, truth, interocular), ms, dihedral, mesh.num_faces)
                    )
        print(start, {k: round(float(np.mean([r[0] for r in v])), 4)
                      for k, v in records.items()}, flush=True)  # fmt: skip
    yaws = np.array(yaws)
    figures = {}
    for key, rows in records.items():
        values = np.array(rows)
        buckets = {}
        for low, high in YAW_BUCKETS:
            inside = (yaws >= low) & ((yaws < high) | ((high == 90) & (yaws <= 90)))
            buckets[f"[{low:.0f},{high:.0f}{']' if high == 90 else ')'}"] = round(
                float(values[inside, 0].mean()), 5
            )
        figures[key] = {
            "nme": round(float(values[:, 0].mean()), 5),
            "nme_by_yaw": buckets,
            "mesh_ms_median_one_thread": round(float(np.median(values[:, 1])), 1),
            "mean_dihedral_deg": round(float(values[:, 2].mean()), 2),
            "faces_median": int(np.median(values[:, 3])),
        }
    save("mesh_quality", {"checkpoint": info["variant"], "sha256": info["sha256"],
                          "faces": len(yaws), "eval_seed": EVAL_SEED, **figures})  # fmt: skip


if __name__ == "__main__":
    main()
