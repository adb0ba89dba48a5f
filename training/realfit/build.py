"""Fit the ICT head to every real photo with landmarks and write the training cache.

    python -m training.realfit.build [--shared ../shared] [--out runs/realfit]

1. Fits 300-W `helen_train` + `afw` (one face, one identity) with ICT's 68 landmark
   vertices, then derives the project's own 68-point map from those held-in fits (each
   point moves to the nearby vertex that minimises its mean reprojection error), and
   refits with it; the map goes to `facerecon/data/landmarks68.json`
   (`--write-map`), which the service's registration uses.
2. Fits every CFP person (001-450) across its 14 photos with one identity, and every
   300-W face (held-out splits too: they are the yardstick's labels; nothing is chosen on
   them), with the same settings.
3. Writes `OUT/fits.pt` (per photo: path, split, landmarks, camera, identity, expression,
   residuals; `training.realfit.dataset` draws samples from it) and `OUT/realfit.json`
   (the figures in training/README.md).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from facerecon.face_model import region_vertices
from facerecon.pose import pose_from_rotation
from training.engine.facemodel import SOLID_REGIONS, load_face_model
from training.realfit.annotations import Photo, cfp_photos, w300_photos
from training.realfit.correspondence import Correspondences
from training.realfit.fitter import Fit, FitInput, FitSettings, LandmarkFitter

REPO = Path(__file__).resolve().parents[2]
MAP_FILE = REPO / "service/facerecon/data/landmarks68.json"
PROFILE_STARTS = [(side, yaw) for side in ("right", "left") for yaw in (-75.0, -45.0, 45.0, 75.0)]
W300_STARTS = [("right", yaw) for yaw in (-60.0, -30.0, 0.0, 30.0, 60.0)]


def starts_for(photo: Photo) -> list[tuple[str, float]]:
    if photo.scheme == "cfp_profile":
        return PROFILE_STARTS
    if photo.scheme == "cfp_frontal":
        return [("right", -20.0), ("right", 0.0), ("right", 20.0)]
    return W300_STARTS


def fit_photos(
    fitter: LandmarkFitter, photos: list[Photo], chunk: int = 420, identity=None
) -> dict[str, torch.Tensor]:
    """Fit `photos` in chunks (a person never split; 300-W faces each their own group)."""
    out: dict[str, list] = {}
    groups = [p.person if p.person >= 0 else -1 - i for i, p in enumerate(photos)]
    i = 0
    while i < len(photos):
        j = min(len(photos), i + chunk)
        while j < len(photos) and groups[j] == groups[j - 1]:
            j += 1
        part = photos[i:j]
        fit = fitter.fit(FitInput(
            torch.from_numpy(np.stack([p.points for p in part])),
            [p.scheme for p in part], torch.tensor(groups[i:j]),
            [starts_for(p) for p in part],
            None if identity is None else identity[i:j],
        ))  # fmt: skip
        for key, value in fit_record(fit).items():
            if key in ("vertex", "residual"):  # 30 or 68 points: padded to 68 (-1, nan)
                pad = torch.full((len(part), 68 - value.shape[1]), -1 if key == "vertex" else
                                 float("nan"), dtype=value.dtype)  # fmt: skip
                value = torch.cat([value, pad], 1)
            out.setdefault(key, []).append(value)
        print(f"  fitted {j}/{len(photos)}", flush=True)
        i = j
    return {
        k: torch.cat(v) if isinstance(v[0], torch.Tensor) else sum(v, []) for k, v in out.items()
    }


def fit_record(fit: Fit) -> dict:
    poses = [pose_from_rotation(r.numpy()) for r in fit.rotation]
    return {
        "rotation": fit.rotation, "scale": fit.scale, "translation": fit.translation,
        "identity": fit.identity, "expression": fit.expression, "side": fit.side,
        "vertex": fit.vertex, "residual": fit.residual,
        "yaw": torch.tensor([p.yaw for p in poses]),
        "pitch": torch.tensor([p.pitch for p in poses]),
        "roll": torch.tensor([p.roll for p in poses]),
    }  # fmt: skip


def derive_landmarks68(
    fitter: LandmarkFitter, photos: list[Photo], fits: dict, radius: float = 1.5
) -> torch.Tensor:
    """The 68-point vertex map minimising held-in reprojection error.

    Each point moves to the vertex within `radius` cm of its current one whose projection
    under every fit lies nearest, on average, to the annotated point: all fits for inner
    points, near-frontal ones (|yaw| < 20) for the jaw, where the contour is the face's edge.
    """
    model, corr = fitter.model, fitter.corr
    points = torch.from_numpy(np.stack([p.points for p in photos]))
    current = corr.landmarks68.clone()
    surface = corr.surface
    frontal = fits["yaw"].abs() < 20
    for k in range(68):
        centre = model.neutral[current[k]]
        near = surface[(model.neutral[surface] - centre).norm(dim=1) <= radius]
        use = frontal if k < 17 else torch.ones_like(frontal)
        pos = fitter.shape_at(near.expand(int(use.sum()), -1), fits["identity"][use],
                              fits["expression"][use])  # fmt: skip
        cam = pos @ fits["rotation"][use].transpose(1, 2)
        s = fits["scale"][use][:, None]
        xy = (
            torch.stack([cam[..., 0] * s, -cam[..., 1] * s], -1) + fits["translation"][use][:, None]
        )
        lo, hi = points[use].amin(1), points[use].amax(1)
        norm = (hi - lo).amax(-1)[:, None]
        error = ((xy - points[use][:, k][:, None]).norm(dim=-1) / norm).mean(0)
        current[k] = near[error.argmin()]
    return current


def normalised_errors(photos: list[Photo], residual: torch.Tensor) -> dict:
    """Mean reprojection error per photo: 68-point by the outer-eye distance and by the box
    sqrt(w h); CFP by the box sqrt(w h) (one eye only)."""
    pts = torch.from_numpy(np.stack([p.points for p in photos]))
    box = (pts.amax(1) - pts.amin(1)).prod(-1).sqrt()
    mean = residual.nanmean(1)
    out = {"box": mean / box}
    if photos[0].scheme == "ibug68":
        out["outer_eye"] = mean / (pts[:, 36] - pts[:, 45]).norm(dim=-1)
    return out


def quantiles(values: torch.Tensor) -> dict:
    v = values.float()
    return {"median": round(v.median().item(), 4), "p90": round(v.quantile(0.9).item(), 4),
            "mean": round(v.mean().item(), 4), "n": len(v)}  # fmt: skip


def multiview_check(fitter: LandmarkFitter, photos: list[Photo], fits: dict) -> dict:
    """Is the shared identity real? Fit held-in people's frontals alone, then their profiles
    with that identity held (pose and expression free), against the mean face and against
    the multi-view identity; and the frontal-only vs profile-only shape difference."""
    frontal = [i for i, p in enumerate(photos) if p.scheme == "cfp_frontal"]
    profile = [i for i, p in enumerate(photos) if p.scheme == "cfp_profile"]
    by_person = {p.person: k for k, p in enumerate([photos[i] for i in frontal])}
    f_fit = fit_photos(fitter, [photos[i] for i in frontal])
    p_only = fit_photos(fitter, [photos[i] for i in profile])
    prof = [photos[i] for i in profile]
    id_frontal = torch.stack([f_fit["identity"][by_person[p.person]] for p in prof])
    arms = {
        "mean_face": torch.zeros_like(id_frontal),
        "frontal_only_identity": id_frontal,
        "multiview_identity": fits["identity"][profile],
    }
    result = {}
    for name, identity in arms.items():
        fit = fit_photos(fitter, prof, identity=identity)
        result[name] = quantiles(normalised_errors(prof, fit["residual"])["box"])
    face = fitter.model.face_vertices
    interocular = (fitter.model.neutral[fitter.model.landmarks68[36]]
                   - fitter.model.neutral[fitter.model.landmarks68[45]]).norm()  # fmt: skip
    diffs = []
    persons = sorted({p.person for p in prof})
    for person in persons:
        a = f_fit["identity"][by_person[person]]
        b = p_only["identity"][[k for k, p in enumerate(prof) if p.person == person][0]]
        zero = torch.zeros(1, fitter.expression_basis.shape[0])
        va = fitter.shape_at(face[None], a[None], zero)
        vb = fitter.shape_at(face[None], b[None], zero)
        diffs.append(((va - vb).norm(dim=-1).mean() / interocular).item())
    result["frontal_vs_profile_identity_shape_difference"] = quantiles(torch.tensor(diffs))
    result["people"] = len(persons)
    return result


def summary(photos: list[Photo], fits: dict) -> dict:
    out = {}
    for name, keep in {
        "300w_train": lambda p: p.subset in ("helen_train", "afw"),
        "300w_helen_test": lambda p: p.subset == "helen_test",
        "cfp_frontal_train": lambda p: p.scheme == "cfp_frontal" and not p.held_out,
        "cfp_profile_train": lambda p: p.scheme == "cfp_profile" and not p.held_out,
        "cfp_frontal_held_out": lambda p: p.scheme == "cfp_frontal" and p.held_out,
        "cfp_profile_held_out": lambda p: p.scheme == "cfp_profile" and p.held_out,
    }.items():
        idx = [i for i, p in enumerate(photos) if keep(p)]
        if not idx:
            continue
        errs = normalised_errors([photos[i] for i in idx], fits["residual"][idx])
        out[name] = {f"reprojection_{k}": quantiles(v) for k, v in errs.items()}
        out[name]["abs_yaw"] = quantiles(fits["yaw"][idx].abs())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--out", default=str(REPO / "runs/realfit"))
    parser.add_argument("--results", default=str(REPO / "bench/results/realfit.json"))
    parser.add_argument("--write-map", action="store_true", help=f"write {MAP_FILE.name}")
    parser.add_argument("--check-people", type=int, default=60,
                        help="held-in CFP people in the multi-view check")  # fmt: skip
    args = parser.parse_args()
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_face_model(Path(args.shared) / "facemodel")
    settings = FitSettings()

    # 1. The project's 68-point map, from held-in 300-W fits only.
    held_in_300w = w300_photos(args.shared, ("helen_train", "afw"))
    fitter = LandmarkFitter(model, Correspondences(model), settings)
    first = fit_photos(fitter, held_in_300w)
    before = normalised_errors(held_in_300w, first["residual"])["outer_eye"]
    landmarks68 = derive_landmarks68(fitter, held_in_300w, first)
    fitter = LandmarkFitter(model, Correspondences(model, landmarks68), settings)
    after = normalised_errors(held_in_300w, fit_photos(fitter, held_in_300w)["residual"])
    print(f"68-point map: held-in error {before.mean():.4f} -> {after['outer_eye'].mean():.4f}",
          flush=True)  # fmt: skip
    if args.write_map:
        MAP_FILE.parent.mkdir(parents=True, exist_ok=True)
        MAP_FILE.write_text(json.dumps({
            "about": "ICT vertex of each iBUG-68 point, derived by training/realfit/build.py "
                     "from fits to 300-W helen_train + afw (held-in only); neutral_cm: those "
                     "vertices on the ICT Face Model Light's neutral face (MIT), centimetres, "
                     "x the subject's left, y up, z out of the face",
            "vertices": region_vertices(SOLID_REGIONS)[landmarks68.numpy()].tolist(),
            "neutral_cm": model.neutral[landmarks68].double().numpy().round(3).tolist(),
        }) + "\n")  # fmt: skip

    # 2. Every photo.
    photos = cfp_photos(args.shared) + w300_photos(args.shared)
    fits = fit_photos(fitter, photos)
    print(f"fitted {len(photos)} photos in {time.time() - started:.0f} s", flush=True)
    torch.save({"photos": [{k: v for k, v in asdict(p).items()} for p in photos],
                "fits": fits, "landmarks68": landmarks68, "settings": asdict(settings)},
               out / "fits.pt")  # fmt: skip
    cache_seconds = time.time() - started

    # 3. Figures.
    check_people = [p for p in photos if p.subset == "cfp" and p.person <= args.check_people]
    check_idx = [
        i for i, p in enumerate(photos) if p.subset == "cfp" and p.person <= args.check_people
    ]
    check_fits = {
        k: (v[check_idx] if isinstance(v, torch.Tensor) else None) for k, v in fits.items()
    }
    results = {
        "settings": asdict(settings),
        "map_68_held_in_outer_eye_error": {"ict": quantiles(before),
                                           "derived": quantiles(after["outer_eye"])},
        "fits": summary(photos, fits),
        "multiview_check_held_in": multiview_check(fitter, check_people, check_fits),
        "cache": {"photos": len(photos), "seconds": round(cache_seconds, 1),
                  "bytes": (out / "fits.pt").stat().st_size,
                  "machine": "2-core CPU, shared with other jobs"},
        "normalisation": "68-point: mean error / outer-eye distance |p36-p45| (and / sqrt(w h) "
                         "of the landmark box); CFP: mean error / sqrt(w h) of the 30-point box",
    }  # fmt: skip
    Path(args.results).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["fits"], indent=1))


if __name__ == "__main__":
    main()
