"""Cross-pose face recognition on CFP: do facerecon's rendered views help a real recogniser?

    pip install -e ".[eval]"
    python -m bench.crosspose [--people 100] [--weights weights/facerecon.pt]
                              [--arcface-model PATH/w600k_r50.onnx] [--synthetic]
                              [--face-model ../shared/facemodel/ict_face_light.npz]

Writes bench/results/crosspose.json and docs/crosspose.png (with --synthetic:
crosspose_synthetic.json / .png); caches embeddings (never images) under runs/crosspose/
(git-ignored). See bench/README_crosspose.md for the protocol.

Recogniser: dlib's ResNet face embedding (face_recognition_models, public domain weights,
150×150 chips, score = -Euclidean distance) by default; InsightFace ArcFace (112×112 chips,
cosine) when `--arcface-model` names its ONNX file (nothing is downloaded).

Data: CFP (/work/shared/realfaces/cfp): per person, frontal photos 01-02 are the gallery,
frontal 09-10 and the 4 profiles are probes. Faces are found by YuNet. Probes are bucketed by
the reconstruction's estimated |yaw|: [0, 30), [30, 60), [60, 90].
--synthetic: people drawn by the training engine (training/engine; shapes of a seed never
used in training, textures from held-out UTKFace photos, no occluders), each seen at yaw 0
(the gallery) and at SYNTHETIC_PROBE_YAWS with the same texture, light and background, so
that only the pose differs; probes are bucketed by their true |yaw|.

Arms (every probe against every gallery photo; a person's score is the best of theirs):
- raw: the photos as the recogniser's own pipeline aligns them (dlib: its 5-point shape
  predictor in the YuNet box; ArcFace: YuNet's five points);
- frontalised: the probe's reconstruction turned to frontal, chip from the geometry's points,
  against the raw gallery;
- pose_matched: the raw probe against each gallery photo's reconstruction rendered at the
  probe's estimated yaw (on a 15° grid, pitch 0);
- fusion: the mean of the three scores;
- control, raw_geometry_aligned: the probe photo itself, aligned by the five points facerecon
  reads off its reconstruction (as the rendered arms are) instead of the recogniser's own
  aligner: it separates what the geometry's points cost from what the rendering costs;
- registered_pose_matched: the raw probe against each gallery photo's registered, textured
  ICT head (the face model fitted to the reconstruction, `registered_views`) rendered at the
  probe's estimated yaw (same grid, pitch 0), chip from the head's own 68 landmarks;
- registered_frontalised: the probe's registered, textured head turned to frontal (the
  service's `frontal` view with `registered_views`) against the raw gallery.
The registered arms need the face model (`--face-model`); without it they are skipped and the
results say so. Each photo is registered once; all its grid-yaw renders reuse that fit.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CFP = SHARED / "realfaces" / "cfp" / "images"
YUNET = SHARED / "models" / "yunet" / "yunet_s_dynamic.onnx"
CACHE = REPO / "runs" / "crosspose"
DOCS = REPO / "docs"
FACE_MODEL = SHARED / "facemodel" / "ict_face_light.npz"
CHECKPOINTS = [REPO / "weights" / "facerecon.pt", REPO / "runs" / "vrn-light-cpu" / "model.pt"]

GALLERY = ("frontal/01.jpg", "frontal/02.jpg")
FRONTAL_PROBES = ("frontal/09.jpg", "frontal/10.jpg")
PROFILE_PROBES = ("profile/01.jpg", "profile/02.jpg", "profile/03.jpg", "profile/04.jpg")
SYNTHETIC_GALLERY = ("yaw+0",)
SYNTHETIC_PROBE_YAWS = (10.0, 20.0, 35.0, 45.0, 55.0, 65.0, 75.0, 85.0)
SYNTHETIC_SEED = 20171  # the engine's held-out seed is 20170; neither is used in training
SYNTHETIC_PAD = 48  # pixels of edge-replicated border: YuNet misses faces that touch the frame
BUCKETS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))
REGISTERED_ARMS = ("registered_pose_matched", "registered_frontalised")  # need the face model
ARMS = ("raw", "frontalised", "pose_matched", "fusion", "raw_geometry_aligned", *REGISTERED_ARMS)
CONTROLS = ("raw_geometry_aligned",)  # plotted grey and dashed
PLOTTED = tuple(arm for arm in ARMS if arm not in CONTROLS)
YAW_GRID = np.arange(-90.0, 91.0, 15.0)  # gallery renders for the pose-matched arm
VIEW_SIZE = 224
BACKGROUND = (128, 128, 128)
FARS = (0.01, 0.001)


# ---- metrics (scores: higher = more alike) ----------------------------------------------


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """True accept rate at the strictest threshold whose false accept rate is <= `far`:
    accept `score > t` with `t` the impostor score that exactly floor(far * n) exceed."""
    if len(genuine) == 0 or len(impostor) == 0:
        return float("nan")
    ranked = np.sort(impostor)[::-1]
    allowed = int(np.floor(far * len(ranked) + 1e-9))
    threshold = ranked[allowed] if allowed < len(ranked) else -np.inf
    return float(np.mean(genuine > threshold))


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """The error rate where false accepts equal false rejects (mean of the two at the
    threshold where they are closest; thresholds at every observed score)."""
    if len(genuine) == 0 or len(impostor) == 0:
        return float("nan")
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    gen, imp = np.sort(genuine), np.sort(impostor)
    # accept score >= t: FRR = share of genuine below t, FAR = share of impostors at or above
    frr = np.searchsorted(gen, thresholds, side="left") / len(gen)
    far = 1.0 - np.searchsorted(imp, thresholds, side="left") / len(imp)
    best = np.argmin(np.abs(far - frr))
    return float((far[best] + frr[best]) / 2.0)


def rank1(scores: np.ndarray, truth: np.ndarray) -> float:
    """Share of probes (rows of `scores`, one column per gallery identity) whose best
    gallery identity is their own (`truth`: column index per row)."""
    if len(scores) == 0:
        return float("nan")
    return float(np.mean(np.argmax(scores, axis=1) == truth))


def verification(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """TAR at each FAR, EER and rank-1 of a probe x identity score matrix."""
    own = np.zeros(scores.shape, bool)
    own[np.arange(len(truth)), truth] = True
    genuine, impostor = scores[own], scores[~own]
    out = {f"tar_at_far_{far:g}": tar_at_far(genuine, impostor, far) for far in FARS}
    out["eer"] = equal_error_rate(genuine, impostor)
    out["rank1"] = rank1(scores, truth)
    return out


def bootstrap(
    metric: Callable[[np.ndarray], dict[str, float]],
    identities: np.ndarray,
    rounds: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile confidence intervals of `metric(rows)` when the identities (`identities`:
    one label per row) are resampled with replacement, taking all rows of each drawn one."""
    rng = np.random.default_rng(seed)
    people = np.unique(identities)
    rows_of = {p: np.flatnonzero(identities == p) for p in people}
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        drawn = rng.choice(people, size=len(people), replace=True)
        rows = np.concatenate([rows_of[p] for p in drawn])
        for name, value in metric(rows).items():
            samples.setdefault(name, []).append(value)
    tail = (1.0 - level) / 2.0 * 100.0
    return {
        name: (float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100.0 - tail)))
        for name, v in samples.items()
    }


def bucket_of(yaw: float) -> int:
    return min(int(abs(yaw) // 30.0), len(BUCKETS) - 1)


# ---- recognisers -------------------------------------------------------------------------


class DlibRecogniser:
    """dlib's ResNet (LFW 99.38 %), its 5-point aligner; 150×150 chips, -Euclidean score."""

    layout = "dlib150"

    def __init__(self) -> None:
        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or spec.origin is None:
            raise SystemExit("pip install face_recognition_models (the [eval] extra)")
        models = Path(spec.origin).parent / "models"
        self.dlib = dlib
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat")
        )
        self.name = "dlib_resnet_v1"

    def raw_chip(self, image: np.ndarray, box: np.ndarray, points5: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self.shape(image, self.dlib.rectangle(x0, y0, x1, y1))
        return np.asarray(self.dlib.get_face_chip(image, shape, size=150, padding=0.25))

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, 128), np.float32)
        chips = [np.ascontiguousarray(c) for c in chips]
        return np.asarray(self.net.compute_face_descriptor(chips), np.float32)

    @staticmethod
    def scores(probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        return -np.linalg.norm(probes[:, None] - gallery[None], axis=2)


class ArcFaceRecogniser:
    """InsightFace ArcFace from a user-supplied ONNX file; 112×112 chips, cosine score."""

    layout = "arcface112"

    def __init__(self, model: Path) -> None:
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        self.net = ArcFaceONNX(model_file=str(model))
        self.net.prepare(ctx_id=-1)
        self.name = f"arcface:{model.name}"

    def raw_chip(self, image: np.ndarray, box: np.ndarray, points5: np.ndarray) -> np.ndarray:
        from insightface.utils import face_align

        return face_align.norm_crop(image, points5.astype(np.float32), image_size=112)

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, 512), np.float32)
        bgr = [np.ascontiguousarray(c[..., ::-1]) for c in chips]  # insightface takes BGR
        features = np.asarray(self.net.get_feat(bgr), np.float32)
        return features / np.linalg.norm(features, axis=1, keepdims=True)

    @staticmethod
    def scores(probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        return probes @ gallery.T


# ---- reconstruction + embeddings per photo ------------------------------------------------


@dataclass
class Photo:
    person: int
    name: str  # e.g. "profile/03.jpg"
    found: bool = False
    yaw: float = float("nan")
    pitch: float = float("nan")
    visible_fraction: float = float("nan")  # of the frontalised view
    raw: np.ndarray | None = None  # embedding of the photo itself
    frontal: np.ndarray | None = None  # embedding of the frontalised reconstruction
    geometry_aligned: np.ndarray | None = None  # the photo aligned by the geometry's points
    at_yaw: dict[float, np.ndarray] | None = None  # gallery: embeddings rendered per grid yaw
    true_yaw: float | None = None  # known for synthetic people: buckets use it
    # with the face model: the registered, textured head turned to frontal (probe) or
    # rendered per grid yaw (gallery)
    registered_frontal: np.ndarray | None = None
    registered_at_yaw: dict[float, np.ndarray] | None = None
    seconds: float = float("nan")  # to reconstruct, render and embed it (all arms)
    registered_seconds: float = 0.0  # of which the registered arms' (fit, texture, renders)

    @property
    def bucket_yaw(self) -> float:
        return self.yaw if self.true_yaw is None else self.true_yaw


def nearest_grid_yaw(yaw: float) -> float:
    return float(YAW_GRID[np.argmin(np.abs(YAW_GRID - yaw))])


def turned_chips(mesh, landmarks68: np.ndarray, pose, yaws: list[float], layout) -> list:
    """Chips of `mesh` rendered at each of `yaws` (pitch 0, head upright; one render call),
    aligned by its 68 mesh-frame `landmarks68` projected like each view."""
    from facerecon.chips import align_chip, layout_points, project
    from facerecon.chips import turn_to as turn_to_pose
    from facerecon.pose import Pose
    from facerecon.render import render_views

    turns = [turn_to_pose(pose, Pose(yaw, 0.0, 0.0)) for yaw in yaws]
    angles = [(yaw, 0.0) for yaw in yaws]
    views = render_views(mesh, angles, VIEW_SIZE, BACKGROUND, rotation=pose.matrix().T)
    chips = []
    for view, turn in zip(views, turns, strict=True):
        points = layout_points(project(mesh, landmarks68, turn, VIEW_SIZE), layout)
        chips.append(align_chip(view[..., :3], points, layout))
    return chips


def process(
    rec,
    recogniser,
    photo: Photo,
    image: np.ndarray,
    gallery_yaws: list[float] | None,
    registered: bool = False,
) -> Photo:
    """Detect, reconstruct, render and embed one photo (its pixels never leave memory).
    `gallery_yaws`: for a gallery photo, the grid yaws to render it at; None for a probe.
    `registered`: also the registered arms (`rec` has the face model): the face model is
    fitted once, and that fit renders every view of the photo."""
    from facerecon.chips import LAYOUTS, align_chip, layout_points, template_landmarks68
    from facerecon.errors import InputError
    from facerecon.reconstructor import ReconstructOptions

    start = time.perf_counter()
    gallery = gallery_yaws is not None
    detections = rec.detector.detect(image)
    if not detections:
        return photo
    best = detections[0]
    options = ReconstructOptions(
        frontal=not gallery,
        pose=True,
        view_size=VIEW_SIZE,
        background=BACKGROUND,
        chips=(recogniser.layout,),
        visibility=not gallery,
        # a gallery photo's fit is made here and rendered below; a probe's frontal view of
        # the registered head is the service's own (a second `finish`, below)
        registration=registered and gallery,
    )
    try:
        face = rec.prepare(image, face_box=best.box, landmarks=best.landmarks)
        (volume,) = rec.predict([face])
        result = rec.finish(face, volume, options)
    except InputError:
        return photo
    photo.found = True
    photo.yaw, photo.pitch = result.pose.yaw, result.pose.pitch
    chips = [recogniser.raw_chip(image, np.asarray(best.box), np.asarray(best.landmarks))]
    layout = LAYOUTS[recogniser.layout]
    if gallery:  # rendered at every grid yaw, head upright, pitch 0
        mesh, pose = result.mesh, result.pose
        landmarks = template_landmarks68(mesh, pose, result.transform, result.landmarks68)
        chips += turned_chips(mesh, landmarks, pose, gallery_yaws, layout)
    else:
        chips.append(result.frontal.chips[recogniser.layout][..., :3])
        photo.visible_fraction = result.frontal.visible_fraction
        landmarks = template_landmarks68(
            result.mesh, result.pose, result.transform, result.landmarks68
        )
        chips.append(align_chip(image, layout_points(landmarks[:, :2], layout), layout))
    embeddings = recogniser.embed(chips)
    photo.raw = embeddings[0]
    if gallery:
        photo.at_yaw = dict(zip(gallery_yaws, embeddings[1:], strict=True))
    else:
        photo.frontal, photo.geometry_aligned = embeddings[1], embeddings[2]
    if registered:
        photo.registered_seconds = registered_arms(
            rec, recogniser, photo, face, volume, result, gallery_yaws
        )
    photo.seconds = time.perf_counter() - start
    return photo


def registered_arms(
    rec, recogniser, photo: Photo, face, volume, result, gallery_yaws: list[float] | None
) -> float:
    """Embed the photo's registered, textured head for the registered arms: a gallery photo's
    (`result` holds its fit) rendered at every one of `gallery_yaws`, a probe's turned to
    frontal by the service (`registered_views`). Returns the seconds it took, the fit's
    included."""
    from facerecon.chips import LAYOUTS
    from facerecon.reconstructor import ReconstructOptions
    from facerecon.texture import registered_mesh

    start = time.perf_counter()
    if gallery_yaws is not None:  # the fit made by `finish`, rendered per grid yaw
        layout = LAYOUTS[recogniser.layout]
        fitted = (result.timings_ms["registration"] + result.timings_ms["texture"]) / 1000.0
        shown = registered_mesh(result.registration, result.texture)
        landmarks = result.registration.landmarks68_3d
        chips = turned_chips(shown, landmarks, result.pose, gallery_yaws, layout)
        embeddings = recogniser.embed(chips)
        photo.registered_at_yaw = dict(zip(gallery_yaws, embeddings, strict=True))
    else:  # probe: the service's frontal view of the registered head, and its chip
        options = ReconstructOptions(
            frontal=True,
            pose=True,
            view_size=VIEW_SIZE,
            background=BACKGROUND,
            chips=(recogniser.layout,),
            registration=True,
            registered_views=True,
        )
        frontal = rec.finish(face, volume, options).frontal
        fitted = 0.0
        (photo.registered_frontal,) = recogniser.embed([frontal.chips[recogniser.layout][..., :3]])
    return fitted + time.perf_counter() - start


# ---- the people and their photos ------------------------------------------------------------


class CfpPhotos:
    """CFP: real photos of the first `people` people, or (`held_out`) of people 401-450,
    whom no training step saw (training/realfit/annotations.py)."""

    gallery, probes = GALLERY, FRONTAL_PROBES + PROFILE_PROBES

    def __init__(self, people: int, held_out: bool = False) -> None:
        if not CFP.is_dir():
            raise SystemExit("needs ../shared/realfaces/cfp")
        everyone = sorted(int(p.name) for p in CFP.iterdir() if p.is_dir())
        if held_out:
            everyone = [p for p in everyone if 401 <= p <= 450]
        self.people = everyone[:people]
        self.source = "cfp-held-out" if held_out else "cfp"

    def image(self, person: int, name: str) -> np.ndarray:
        from facerecon.image import decode_image

        return decode_image((CFP / f"{person:03d}" / name).read_bytes())

    def true_yaw(self, person: int, name: str) -> float | None:
        return None


class SyntheticPhotos:
    """People drawn by the training engine, each at yaw 0 and SYNTHETIC_PROBE_YAWS."""

    gallery = SYNTHETIC_GALLERY
    probes = tuple(f"yaw+{yaw:g}" for yaw in SYNTHETIC_PROBE_YAWS)
    source = f"synthetic:{SYNTHETIC_SEED}"

    def __init__(self, people: int) -> None:
        from dataclasses import replace

        from training.engine.synth import EngineConfig, SyntheticFaces

        config = EngineConfig()
        config = replace(config, appearance=replace(config.appearance, occluder_probability=0.0))
        self.engine = SyntheticFaces.from_shared(
            SHARED, CACHE / "engine", "heldout", seed=SYNTHETIC_SEED, config=config
        )
        self.people = list(range(people))
        self._sweep: tuple[int, dict[str, tuple[np.ndarray, float]]] | None = None

    def _of(self, person: int, name: str) -> tuple[np.ndarray, float]:
        if self._sweep is None or self._sweep[0] != person:  # one person in memory at a time
            names = self.gallery + self.probes
            yaws = [float(n.removeprefix("yaw")) for n in names]
            drawn = self.engine.pose_sweep(person, yaws)
            self._sweep = (person, {
                n: (self._photo(b.image[0].numpy()), float(b.yaw[0]))
                for n, b in zip(names, drawn, strict=True)
            })  # fmt: skip
        return self._sweep[1][name]

    @staticmethod
    def _photo(chw: np.ndarray) -> np.ndarray:
        rgb = (np.clip(chw.transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return np.pad(rgb, ((SYNTHETIC_PAD,) * 2, (SYNTHETIC_PAD,) * 2, (0, 0)), mode="edge")

    def image(self, person: int, name: str) -> np.ndarray:
        return self._of(person, name)[0]

    def true_yaw(self, person: int, name: str) -> float | None:
        return self._of(person, name)[1]


# ---- the protocol ---------------------------------------------------------------------------


def arms_run(registered: bool) -> tuple[str, ...]:
    """The arms a run makes: all of ARMS, or without the face model all but the registered."""
    return ARMS if registered else tuple(a for a in ARMS if a not in REGISTERED_ARMS)


def score_matrices(
    probes: list[Photo],
    gallery: list[Photo],
    people: list[int],
    recogniser,
    arms: tuple[str, ...] = ARMS,
) -> dict[str, np.ndarray]:
    """Per arm of `arms`, probe x person scores: the best over that person's gallery photos."""
    column = {p: i for i, p in enumerate(people)}
    raw_g = np.stack([g.raw for g in gallery])
    raw_p = np.stack([p.raw for p in probes])
    front_p = np.stack([p.frontal for p in probes])
    raw = recogniser.scores(raw_p, raw_g)

    def at_probe_yaw(field: str) -> np.ndarray:
        """The raw probe vs the gallery rendered at its grid yaw (`field`: per-yaw dicts)."""
        matched = np.empty_like(raw)
        for i, probe in enumerate(probes):
            yaw = nearest_grid_yaw(probe.yaw)
            rendered = np.stack([getattr(g, field)[yaw] for g in gallery])
            matched[i] = recogniser.scores(raw_p[i : i + 1], rendered)[0]
        return matched

    per_photo = {
        "raw": raw,
        "frontalised": recogniser.scores(front_p, raw_g),
    }
    matched = at_probe_yaw("at_yaw")
    per_photo["pose_matched"] = matched
    per_photo["fusion"] = (per_photo["raw"] + per_photo["frontalised"] + matched) / 3.0
    geometry_p = np.stack([p.geometry_aligned for p in probes])
    per_photo["raw_geometry_aligned"] = recogniser.scores(geometry_p, raw_g)
    if set(REGISTERED_ARMS) & set(arms):
        if any(p.registered_frontal is None for p in probes) or any(
            g.registered_at_yaw is None for g in gallery
        ):
            raise ValueError("the registered arms need every photo's registered embeddings")
        per_photo["registered_pose_matched"] = at_probe_yaw("registered_at_yaw")
        registered_p = np.stack([p.registered_frontal for p in probes])
        per_photo["registered_frontalised"] = recogniser.scores(registered_p, raw_g)
    unknown = set(arms) - set(per_photo)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}")
    per_photo = {arm: per_photo[arm] for arm in arms}
    owner = np.array([column[g.person] for g in gallery])
    out = {}
    for arm, s in per_photo.items():
        best = np.full((len(probes), len(people)), -np.inf)
        for j in range(len(people)):
            best[:, j] = s[:, owner == j].max(axis=1)
        out[arm] = best
    return out


def evaluate(
    probes: list[Photo],
    gallery: list[Photo],
    people: list[int],
    recogniser,
    rounds: int,
    arms: tuple[str, ...] = ARMS,
) -> dict:
    column = {p: i for i, p in enumerate(people)}
    matrices = score_matrices(probes, gallery, people, recogniser, arms)
    truth = np.array([column[p.person] for p in probes])
    identity = np.array([p.person for p in probes])
    bucket = np.array([bucket_of(p.bucket_yaw) for p in probes])
    report = {}
    for b, (lo, hi) in enumerate(BUCKETS):
        rows = np.flatnonzero(bucket == b)
        entry = {
            "probes": int(len(rows)),
            "people": int(len(np.unique(identity[rows]))),
            "mean_abs_yaw": float(np.mean(np.abs([probes[r].bucket_yaw for r in rows])))
            if len(rows)
            else None,
            "frontal_view_visible_fraction": float(
                np.mean([probes[r].visible_fraction for r in rows])
            )
            if len(rows)
            else None,
        }
        for arm in arms:
            scores = matrices[arm][rows]
            point = verification(scores, truth[rows])
            ci = bootstrap(
                lambda sel, s=scores, t=truth[rows]: verification(s[sel], t[sel]),
                identity[rows],
                rounds=rounds,
            ) if len(rows) else {}  # fmt: skip
            entry[arm] = {k: {"value": v, "ci95": ci.get(k)} for k, v in point.items()}
        report[f"{lo:g}-{hi:g}"] = entry
    return report


def plot(report: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report)
    x = np.arange(len(labels))
    arms = [arm for arm in ARMS if arm in report[labels[0]]]  # those the run made
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for k, arm in enumerate(arms):
        style = {"linestyle": "--", "color": "grey"} if arm not in PLOTTED else {}
        style["marker"] = "s" if arm in REGISTERED_ARMS else "o"
        values, lows, highs = [], [], []
        for label in labels:
            m = report[label][arm]["tar_at_far_0.01"]
            values.append(m["value"])
            lo, hi = m["ci95"] or (m["value"], m["value"])
            lows.append(m["value"] - lo)
            highs.append(hi - m["value"])
        label = arm.replace("_", " ") + (" (control)" if arm not in PLOTTED else "")
        ax.errorbar(x + (k - (len(arms) - 1) / 2) * 0.07, values, yerr=[lows, highs],
                    capsize=3, label=label, **style)  # fmt: skip
    ax.set_xticks(x, [f"|yaw| {label}°\n({report[label]['probes']} probes)" for label in labels])
    ax.set_ylabel("TAR at FAR 1 %")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def markdown_table(record: dict) -> str:
    """The results as a Markdown table: value [95 % interval] per bucket and arm."""
    lines = [
        "| probe \\|yaw\\| | probes | arm | TAR@FAR 1 % | TAR@FAR 0.1 % | EER | rank-1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for bucket, entry in record["buckets"].items():
        for arm in ARMS:
            if arm not in entry:
                continue
            cells = []
            for metric in ("tar_at_far_0.01", "tar_at_far_0.001", "eer", "rank1"):
                m = entry[arm][metric]
                lo, hi = m["ci95"]
                cells.append(f"{m['value']:.2f} [{lo:.2f}, {hi:.2f}]")
            lines.append(f"| {bucket}° | {entry['probes']} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seconds_per_photo(probes: list[Photo], gallery: list[Photo]) -> dict:
    """Mean seconds to process a probe and a gallery photo (all arms), and of that the
    registered arms' share (cached photos: as timed when first computed)."""
    out = {}
    for role, photos in (("probe", probes), ("gallery", gallery)):
        timed = [p for p in photos if np.isfinite(p.seconds)]
        total = float(np.mean([p.seconds for p in timed])) if timed else None
        extra = float(np.mean([p.registered_seconds for p in timed])) if timed else None
        out[role] = {
            "photos": len(timed),
            "all_arms": None if total is None else round(total, 3),
            "registered_arms": None if extra is None else round(extra, 3),
            "other_arms": None if total is None else round(total - extra, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--held-out", action="store_true",
                        help="CFP people 401-450 only (never trained on)")  # fmt: skip
    parser.add_argument("--weights", type=Path, default=None, help="default: shipped, else run")
    parser.add_argument("--arcface-model", type=Path, default=None, help="ArcFace ONNX file")
    parser.add_argument("--bootstrap", type=int, default=500, help="resampling rounds")
    parser.add_argument("--synthetic", action="store_true",
                        help="the engine's synthetic people instead of CFP")  # fmt: skip
    parser.add_argument(
        "--name", default=None, help="results name (default: crosspose[_synthetic])"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: fastest on a busy CPU)"
    )
    parser.add_argument(
        "--face-model",
        type=Path,
        default=FACE_MODEL,
        help="ICT face model npz for the registered arms (they are skipped without it)",
    )
    parser.add_argument("--table", type=Path, help="print a results JSON as Markdown, and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return

    import torch

    from bench.results_io import save
    from facerecon.reconstructor import Reconstructor

    weights = args.weights or next((p for p in CHECKPOINTS if p.is_file()), None)
    if weights is None:
        raise SystemExit("needs a checkpoint")
    torch.set_num_threads(args.threads)
    recogniser = ArcFaceRecogniser(args.arcface_model) if args.arcface_model else DlibRecogniser()
    rec = Reconstructor(weights, device="cpu", detector=YUNET, face_model=args.face_model)
    registered = rec.face_model is not None
    arms = arms_run(registered)
    skipped = [arm for arm in ARMS if arm not in arms]
    if skipped:
        print(f"no face model at {args.face_model}: the registered arms ({', '.join(skipped)}) "
              "are skipped", flush=True)  # fmt: skip
    photos = (SyntheticPhotos(args.people) if args.synthetic
              else CfpPhotos(args.people, args.held_out))  # fmt: skip
    people = photos.people
    name = args.name or ("crosspose_synthetic" if args.synthetic else "crosspose")

    pose_estimator = (
        "landmark head"
        if rec.predicts_landmarks
        else "geometric"
        if rec.pose_model is None
        else "volume-pose network"
    )
    face_model = hashlib.sha256(args.face_model.read_bytes()).hexdigest() if registered else "none"
    identity = (
        f"v5|{photos.source}|{rec.info.sha256}|{pose_estimator}|{recogniser.name}|{VIEW_SIZE}"
        f"|{face_model}|mirror averaged {rec.mirror_average}"
    )
    key = hashlib.sha256(identity.encode()).hexdigest()
    cache_path = CACHE / f"{key[:16]}.pkl"
    cache: dict[tuple[int, str], Photo] = {}
    if cache_path.is_file():
        cache = pickle.loads(cache_path.read_bytes())
    start = time.perf_counter()

    def stale(photo: Photo | None, yaws: list[float] | None) -> bool:
        if photo is None:
            return True
        if yaws is None:
            return False
        rendered = set(photo.at_yaw or ())
        if registered:
            rendered &= set(photo.registered_at_yaw or ())
        return not set(yaws) <= rendered

    def run(names: tuple[str, ...], yaws: list[float] | None) -> list[Photo]:
        done = []
        for n, person in enumerate(people):
            for photo_name in names:
                photo = cache.get((person, photo_name))
                if stale(photo, yaws):
                    fresh = Photo(person, photo_name, true_yaw=photos.true_yaw(person, photo_name))
                    image = photos.image(person, photo_name)
                    photo = process(rec, recogniser, fresh, image, yaws, registered)
                    cache[(person, photo_name)] = photo
                done.append(photo)
            if n % 10 == 9 or n == len(people) - 1:
                CACHE.mkdir(parents=True, exist_ok=True)
                cache_path.write_bytes(pickle.dumps(cache))
                print(f"{names[0]}...: {n + 1}/{len(people)} people, "
                      f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
        return done

    # probes first: the gallery is rendered only at the grid yaws the probes need
    probes = run(photos.probes, None)
    needed = sorted({nearest_grid_yaw(p.yaw) for p in probes if p.found})
    gallery = run(photos.gallery, needed)
    missing = sum(not p.found for p in probes + gallery)
    probes = [p for p in probes if p.found]
    gallery = [g for g in gallery if g.found]
    # only people with a gallery photo can be identified; probes of others are dropped
    enrolled = sorted({g.person for g in gallery})
    probes = [p for p in probes if p.person in set(enrolled)]
    report = evaluate(probes, gallery, enrolled, recogniser, args.bootstrap, arms)
    checkpoint = str(weights.relative_to(REPO)) if weights.is_relative_to(REPO) else str(weights)
    data = "synthetic people (training engine)" if args.synthetic else "CFP"
    title = (
        f"{data}, {len(enrolled)} people, {recogniser.name}, 95% CI over resampled identities\n"
        f"facerecon {rec.info.variant} ({checkpoint}, sha256 {rec.info.sha256[:12]})"
    )
    default_name = name in ("crosspose", "crosspose_synthetic")
    plot(report, title, (DOCS if default_name else CACHE) / f"{name}.png")
    save(
        name,
        {
            "data": photos.source,
            "recogniser": recogniser.name,
            "weights": checkpoint,
            "weights_sha256": rec.info.sha256,
            "pose_estimator": pose_estimator,
            "mirror_averaged": rec.mirror_average,
            "arms": list(arms),
            "arms_skipped": {arm: f"no face model at {args.face_model}" for arm in skipped},
            "face_model_sha256": face_model if registered else None,
            "chip_landmarks": "facerecon.chips.template_landmarks68: the network's 68 points "
            "where it has a landmark head, else the framed template; registered arms: the "
            "registered head's own 68 landmarks",
            "people": len(enrolled),
            "gallery_photos": len(gallery),
            "probes": len(probes),
            "photos_without_face_or_surface": missing,
            "view_size": VIEW_SIZE,
            "yaw_grid_step_deg": float(YAW_GRID[1] - YAW_GRID[0]),
            "bootstrap_rounds": args.bootstrap,
            "seconds": round(time.perf_counter() - start, 1),
            "seconds_per_photo": seconds_per_photo(probes, gallery),
            "buckets": report,
        },
    )
    print(json.dumps({b: {a: round(report[b][a]["tar_at_far_0.01"]["value"], 3) for a in arms}
                      for b in report}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
