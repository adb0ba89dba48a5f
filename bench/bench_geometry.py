"""Geometry timings: marching cubes (scikit-image vs PyMCubes), volume -> mesh, five views, pose.

    python -m bench.bench_geometry [--repeats 15] [--device cpu] [--threads 1,2]

The volume is an analytic head (skull, face, nose, neck cut by the crop's border) with a
soft ~1-voxel occupancy edge like the network's, in the service's 200 x 192 x 192 grid.
Times are the wall-clock median and minimum over repeats and the minimum CPU time; on a
shared machine the CPU time is the better estimate of the code's cost, the median of what
a request sees. torch's thread count matters: on an oversubscribed machine, two intra-op
threads wait on each other and the renderer can be many times slower than with one.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import mcubes
import numpy as np
import torch
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from bench.results_io import save
from facerecon.mesh import block_means, volume_to_mesh
from facerecon.pose import estimate_pose
from facerecon.render import render_views

SHAPE = (200, 192, 192)  # [d, y, x]
VIEWS = [(0.0, 0.0), (-60.0, 0.0), (60.0, 0.0), (0.0, 20.0), (30.0, -15.0)]


def head_volume(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Soft occupancy of a head-sized union of ellipsoids facing the camera (+d)."""
    d, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")

    def ellipsoid(centre, radii):  # signed distance-like, in voxels (positive inside)
        r = np.sqrt(
            sum(((g - c) / s) ** 2 for g, c, s in zip((d, y, x), centre, radii, strict=True))
        )
        return (1.0 - r) * min(radii)

    inside = np.maximum.reduce([
        ellipsoid((95, 80, 96), (80, 95, 70)),  # skull, cut by the crop's top border
        ellipsoid((130, 120, 96), (45, 55, 55)),  # face and jaw
        ellipsoid((172, 105, 96), (14, 24, 9)),  # nose
        ellipsoid((95, 190, 96), (45, 60, 42)),  # neck, cut by the bottom border
    ])  # fmt: skip
    return (1.0 / (1.0 + np.exp(np.clip(-4.0 * inside, -50, 50)))).astype(np.float32)


def timed(fn: Callable[[], object], repeats: int) -> tuple[dict, object]:
    """Wall-clock median and minimum, and the minimum CPU time of this process (on a busy
    machine the closest to what the code costs)."""
    result = fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        cpu.append(1000.0 * (time.process_time() - start_cpu))
        wall.append(1000.0 * (time.perf_counter() - start))
    figures = {"median_ms": float(np.median(wall)), "min_ms": min(wall), "min_cpu_ms": min(cpu)}
    return {k: round(v, 2) for k, v in figures.items()}, result


def compare_marching_cubes(grid: np.ndarray, repeats: int) -> dict:
    """Both libraries on the same grid, and how far apart their surfaces are."""
    sk_time, (sk_verts, sk_faces, _, _) = timed(lambda: marching_cubes(grid, 0.5), repeats)
    mc_time, (mc_verts, mc_faces) = timed(lambda: mcubes.marching_cubes(grid, 0.5), repeats)
    gap = cKDTree(sk_verts).query(mc_verts)[0]
    return {
        "grid": list(grid.shape),
        "skimage": {**sk_time, "vertices": len(sk_verts), "faces": len(sk_faces)},
        "pymcubes": {**mc_time, "vertices": len(mc_verts), "faces": len(mc_faces)},
        "max_vertex_gap_voxels": round(float(gap.max()), 5),
    }


def time_pipeline(volume: np.ndarray, device: str, repeats: int) -> dict:
    """volume -> mesh, five 256 x 256 views, pose."""
    mesh_time, mesh = timed(lambda: volume_to_mesh(volume), repeats)
    render_time, _ = timed(lambda: render_views(mesh, VIEWS, 256, device=device), repeats)
    pose_time, pose = timed(lambda: estimate_pose(mesh), repeats)
    return {
        "volume_to_mesh": {**mesh_time, "vertices": mesh.num_vertices, "faces": mesh.num_faces},
        "render_5_views_256": {**render_time, "device": device},
        "estimate_pose": {
            **pose_time,
            "pose": [round(pose.yaw, 2), round(pose.pitch, 2), round(pose.roll, 2)],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default="1,2", help="torch intra-op threads to try")
    args = parser.parse_args()

    volume = head_volume()
    occupied = np.argwhere(volume > 0.5)
    lo, hi = occupied.min(axis=0), occupied.max(axis=0) + 1
    cropped = volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    marching = {
        "full_resolution": compare_marching_cubes(np.pad(cropped, 1), args.repeats),
        "step_2_block_means": compare_marching_cubes(block_means(cropped, 2), args.repeats),
    }

    runs = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        runs[f"{threads}_threads"] = time_pipeline(volume, args.device, args.repeats)
    save(
        "geometry",
        {
            "volume": list(SHAPE),
            "views": VIEWS,
            "repeats": args.repeats,
            "marching_cubes": marching,
            "runs": runs,
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        },
    )


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
