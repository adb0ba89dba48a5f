"""The whole pipeline through `Reconstructor`, per stage, and its peak memory.

    python -m bench.bench_pipeline [--weights weights/facerecon.pt] [--faces 10]
    python -m bench.bench_pipeline --weights A.pt --against B.pt [--rounds 3]
    python -m bench.bench_pipeline --against-no-mirror [--rounds 3]

Photos: scikit-image's astronaut plus held-out UTKFace crops from ../shared when present.
Options as the CLI's defaults: five 256 x 256 views, the frontal view and the pose; then,
with the ICT face model (../shared, or --face-model), the same with registration (the fit and
its UV texture). Peak memory covers both.

With `--against` two weights are timed in turns (A, B, A, B, ...; no registration), each
round over all photos, and each stage's median over the rounds is saved as
`pipeline_against.json`: the machine's drift falls on both alike. `--against-no-mirror`
does the same for the weights with and without the Reconstructor's mirror averaging.
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from bench.results_io import save
from facerecon.reconstructor import ReconstructOptions, Reconstructor

SHARED = Path(__file__).resolve().parents[2] / "shared"
FACE_MODEL = SHARED / "facemodel" / "ict_face_light.npz"


def photos(count: int) -> list[bytes]:
    images = [skimage.data.astronaut()[20:220, 120:320]]
    utk = SHARED / "realfaces/utkface/crop_part1"
    if utk.is_dir():
        files = sorted(utk.glob("*.jpg"))
        heldout = files[int(len(files) * 0.95) :]  # never trained on
        images += [np.asarray(Image.open(p).convert("RGB")) for p in heldout[: count - 1]]
    encoded = []
    for image in images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def timed(reconstructor: Reconstructor, inputs: list[bytes], options: ReconstructOptions) -> dict:
    """Median time per stage and in all over the photos, and the meshes' median size."""
    stages: dict[str, list[float]] = {}
    totals, vertices = [], []
    reconstructor(inputs[0], options=options)  # first call pays for lazy initialisation
    for data in inputs:
        result = reconstructor(data, options=options)
        for stage, ms in result.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
        totals.append(sum(result.timings_ms.values()))
        vertices.append(len(result.mesh.vertices))
    return {
        "stage_median_ms": {k: round(statistics.median(v), 1) for k, v in stages.items()},
        "total_median_ms": round(statistics.median(totals), 1),
        "mesh_vertices_median": int(statistics.median(vertices)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--faces", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--face-model", type=Path, default=FACE_MODEL,
                        help="ICT face model: the same calls with registration too")  # fmt: skip
    parser.add_argument("--against", default=None, help="other weights, timed in turns")
    parser.add_argument("--against-no-mirror", action="store_true",
                        help="the weights with and without mirror averaging, in turns")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.against or args.against_no_mirror:
        compare(args)
        return
    reconstructor = Reconstructor(
        args.weights, device=args.device, threads=args.threads, face_model=args.face_model
    )
    reconstructor.warmup()
    options = ReconstructOptions(views=((-60, 0), (-30, 0), (0, 0), (30, 0), (60, 0)))
    inputs = photos(args.faces)
    figures = timed(reconstructor, inputs, options)
    registered = None
    if reconstructor.face_model is not None:  # the fit and the UV texture on top
        registered = timed(reconstructor, inputs, replace(options, registration=True))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    save(
        "pipeline",
        {
            "model": reconstructor.info.variant,
            "device": reconstructor.info.device,
            "faces": len(inputs),
            "views": "5 x 256x256 + frontal",
            **figures,
            "with_registration": registered,
            "peak_rss_mb": round(peak_rss_mb, 1),
            "target_peak_rss_mb": 1536,
        },
    )


def compare(args: argparse.Namespace) -> None:
    """`args.weights` and `args.against` (or the weights without mirror averaging) timed in
    alternating rounds."""
    arms = {}
    if args.against:
        for weights in (args.weights, args.against):
            arms[weights] = Reconstructor(weights, device=args.device, threads=args.threads)
    else:
        for mirror in (True, False):
            label = f"{args.weights or 'shipped weights'}, mirror averaging {mirror}"
            arms[label] = Reconstructor(args.weights, device=args.device, threads=args.threads,
                                        mirror_average=mirror)  # fmt: skip
    for reconstructor in arms.values():
        reconstructor.warmup()
    options = ReconstructOptions(views=((-60, 0), (-30, 0), (0, 0), (30, 0), (60, 0)))
    inputs = photos(args.faces)
    rounds: dict[str, list[dict]] = {weights: [] for weights in arms}
    for _ in range(args.rounds):
        for weights, reconstructor in arms.items():
            rounds[weights].append(timed(reconstructor, inputs, options))
    figures = {}
    for weights, runs in rounds.items():
        stages = runs[0]["stage_median_ms"]
        figures[weights] = {
            "model": arms[weights].info.variant,
            "stage_median_ms": {
                k: round(statistics.median(r["stage_median_ms"][k] for r in runs), 1)
                for k in stages
            },
            "total_median_ms": round(statistics.median(r["total_median_ms"] for r in runs), 1),
            "mesh_vertices_median": runs[0]["mesh_vertices_median"],
            "rounds_total_ms": [r["total_median_ms"] for r in runs],
        }
    save("pipeline_against", {"faces": len(inputs), "views": "5 x 256x256 + frontal",
                              "arms": figures})  # fmt: skip


if __name__ == "__main__":
    main()
