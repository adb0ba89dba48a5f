"""The one entry point: image in, mesh + pose + views out.

The CLI, the gRPC server, the tests and the benchmarks all go through `Reconstructor`.
Its three stages are public so that the server can batch the network across requests:
`prepare` (decode, check, crop) -> `predict` (one batched forward pass) -> `finish`
(volume -> mesh -> pose -> views).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from facerecon.chips import (
    ARCFACE_112,
    LAYOUTS,
    align_chip,
    layout_points,
    project,
    seen_vertices,
    template_landmarks68,
    turn_to,
    visibility_masks,
)
from facerecon.crop import CropTransform, FaceCrop, normalise_face
from facerecon.detect import DEFAULT as DEFAULT_DETECTOR
from facerecon.detect import SHIPPED_DETECTOR, Detection, detector_path, load_detector
from facerecon.errors import FACE_MODEL_MISSING, FeatureUnavailable, InputError
from facerecon.face_model import load_face_model
from facerecon.image import decode_image
from facerecon.mesh import Mesh, decimate, sample_colors, surface_mesh, to_image_space
from facerecon.models import VolumePose, count_parameters, fold_batchnorm, load_checkpoint
from facerecon.models.volume_pose import estimate_volume_pose
from facerecon.models.vrn import IBUG68_MIRROR, heatmap_points
from facerecon.pose import Pose, estimate_pose, pose_from_landmarks, rotation_matrix
from facerecon.registration import (
    Registration,
    face_region,
    prepare_fit,
    register,
    single_threaded,
)
from facerecon.render import render_views
from facerecon.texture import bake_texture, prepare_atlas, registered_mesh
from facerecon.volume import CoarseVolume

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "facerecon.pt"
MAX_VIEWS = 16
VIEW_SIZES = (32, 1024)
REGISTRATION_REGIONS = ("head", "face")
# How the face was found (Reconstruction.face_source): the caller's face_box / landmarks, the
# face detector, or the whole image taken as the face crop (no detector, or it found no face).
FACE_SOURCES = ("request", "detector", "whole_image")
NO_FACE_FOUND = (
    "the face detector found no face: the whole image was taken as the face crop (fine for a "
    "photo the face fills; otherwise send a face_box)"
)


class WeightsNotFound(RuntimeError):
    """No checkpoint where one was expected: the service never runs on random weights."""


def default_weights_path() -> Path:
    return Path(os.environ.get("FACERECON_WEIGHTS", DEFAULT_WEIGHTS))


def load_pose_model(weights: str | Path | None, vrn_weights: Path) -> VolumePose | None:
    """The learned head-pose network: `weights`, else $FACERECON_POSE_WEIGHTS, else `pose.pt`
    beside the VRN weights. None when that default file is absent (the geometric
    `estimate_pose` is then used); a path asked for explicitly must exist."""
    explicit = weights if weights is not None else os.environ.get("FACERECON_POSE_WEIGHTS")
    path = Path(explicit) if explicit else vrn_weights.with_name("pose.pt")
    if not path.is_file():
        if explicit:
            raise WeightsNotFound(f"no head-pose weights at {path}")
        return None
    model, _ = load_checkpoint(path, "cpu")
    if not isinstance(model, VolumePose):
        raise WeightsNotFound(f"{path} holds a {type(model).__name__}, not head-pose weights")
    return fold_batchnorm(model)


@dataclass(frozen=True)
class ReconstructOptions:
    views: tuple[tuple[float, float], ...] = ()  # (yaw, pitch) in degrees
    view_size: int = 256
    background: tuple[int, int, int] | None = None  # None: transparent
    frontal: bool = True
    pose: bool = True
    decimate_faces: int | None = None
    registration: bool = False  # fit the face model (needs it installed); adds a UV texture
    # what of the registered model is returned, exported and shown: "head" (face, head and
    # neck) or "face" (the facial mask alone: `facerecon.registration.face_region`)
    registration_region: str = "head"
    registered_views: bool = False  # render views from the textured registered mesh
    chips: tuple[str, ...] = ()  # aligned chips of every view, facerecon.chips.LAYOUTS names
    visibility: bool = False  # per view: which pixels show surface seen in the photo
    target_pose: Pose | None = None  # also render the head at this pose (roll ignored)

    def validate(self) -> None:
        if len(self.views) > MAX_VIEWS:
            raise InputError(f"at most {MAX_VIEWS} views per request", field="options.views")
        for yaw, pitch in self.views:
            if not (np.isfinite(yaw) and np.isfinite(pitch)):
                raise InputError("view angles must be finite numbers", field="options.views")
            if abs(yaw) > 180 or abs(pitch) > 90:
                raise InputError(
                    "view yaw must be within ±180° and pitch within ±90°", field="options.views"
                )
        if not VIEW_SIZES[0] <= self.view_size <= VIEW_SIZES[1]:
            raise InputError(
                f"view size must be {VIEW_SIZES[0]}..{VIEW_SIZES[1]} pixels",
                field="options.view_size",
            )
        if self.background is not None and not all(0 <= c <= 255 for c in self.background):
            raise InputError(
                "background must be three values in 0..255", field="options.background"
            )
        for name in self.chips:
            if name not in LAYOUTS:
                raise InputError(f"unknown chip layout {name!r}: use one of {sorted(LAYOUTS)}",
                                 field="options.chip_layouts")  # fmt: skip
        if self.target_pose is not None:
            yaw, pitch = self.target_pose.yaw, self.target_pose.pitch
            if not (np.isfinite(yaw) and np.isfinite(pitch) and abs(yaw) <= 180
                    and abs(pitch) <= 90):  # fmt: skip
                raise InputError("target pose must have yaw within ±180° and pitch within ±90°",
                                 field="options.target_pose")  # fmt: skip
        if self.registration_region not in REGISTRATION_REGIONS:
            raise InputError(f"registration region must be one of {REGISTRATION_REGIONS}",
                             field="options.registration_region")  # fmt: skip
        if self.registered_views and not self.registration:
            raise InputError("views of the registered mesh need registration",
                             field="options.view_source")  # fmt: skip
        if self.decimate_faces is not None and self.decimate_faces < 100:
            raise InputError("decimation target must be at least 100 faces",
                             field="options.decimate_faces")  # fmt: skip


@dataclass(frozen=True)
class ModelInfo:
    variant: str
    version: str
    sha256: str
    parameters: int
    device: str
    input_size: int
    slices: int


@dataclass
class PreparedFace:
    """A decoded image and its normalised crop, ready for the network."""

    image: np.ndarray  # (H, W, 3) uint8, the decoded original
    crop: np.ndarray  # (192, 192, 3) float32 in [0, 1]
    transform: CropTransform
    timings_ms: dict[str, float] = field(default_factory=dict)
    # the face's 5 or 68 (x, y) landmarks in the image, the client's or the detector's
    landmarks: np.ndarray | None = None
    face_source: str = "request"  # one of FACE_SOURCES
    face_box: np.ndarray | None = None  # (x0, y0, x1, y1): the detector's box, when it found one
    notes: list[str] = field(default_factory=list)  # for people: e.g. NO_FACE_FOUND
    # (68, 2) image pixels: the iBUG-68 points of the network's landmark head (`predict`)
    predicted_landmarks: np.ndarray | None = None


def registration_landmarks(face: PreparedFace) -> np.ndarray | None:
    """The 2D landmarks the registration is pulled towards: a client's 68 points, else the
    network's 68, else the 5 points of the client or the detector."""
    if face.landmarks is not None and len(face.landmarks) == 68:
        return face.landmarks
    if face.predicted_landmarks is not None:
        return face.predicted_landmarks
    return face.landmarks


@dataclass(frozen=True)
class View:
    yaw: float
    pitch: float
    image: np.ndarray  # (S, S, 4) uint8 RGBA
    chips: dict[str, np.ndarray] = field(default_factory=dict)  # layout -> (s, s, 4) RGBA
    points5: np.ndarray | None = None  # (5, 2) eyes, nose tip, mouth corners (ArcFace order)
    visibility: np.ndarray | None = None  # (S, S) bool: shows surface seen in the photo
    visible_fraction: float | None = None  # seen pixels / head pixels


@dataclass
class Reconstruction:
    mesh: Mesh
    views: list[View]
    frontal: View | None
    pose: Pose | None
    transform: CropTransform
    timings_ms: dict[str, float]
    model: ModelInfo
    registration: Registration | None = None  # when options.registration
    texture: np.ndarray | None = None  # (S, 2S, 3) uint8 UV atlas of the registered mesh
    matched: View | None = None  # when options.target_pose: the head at that pose
    face_source: str = "request"  # how the face was found: one of FACE_SOURCES
    face_box: np.ndarray | None = None  # (x0, y0, x1, y1): the detector's box, when it found one
    notes: list[str] = field(default_factory=list)  # for people: e.g. NO_FACE_FOUND
    # (68, 2) image pixels: the network landmark head's iBUG-68 points (None without one)
    landmarks68: np.ndarray | None = None


class _Timer:
    def __init__(self, timings: dict[str, float], stage: str):
        self.timings, self.stage = timings, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.stage] = (time.perf_counter() - self.start) * 1000.0


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


class Reconstructor:
    """Loads a VRN checkpoint once; called on image bytes or an RGB array.

    `detector`: the face detector that finds the face in photos given without a face box or
    landmarks. "default" ($FACERECON_DETECTOR, else the shipped YuNet), a model file, or None
    (also "none") to take every such photo whole as the face crop. When the detector finds no
    face, the whole photo is the crop too, and the result says so (`face_source`, `notes`).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "auto",
        detector: str | Path | None = DEFAULT_DETECTOR,
        compile: bool = False,
        threads: int | None = None,
        max_pixels: int = 40_000_000,
        face_model: str | Path | None = None,
        pose_weights: str | Path | None = None,
        precision: str | None = None,
        mirror_average: bool = True,
    ):
        """`precision` of the network on the CPU (default: $FACERECON_PRECISION, else
        "auto"): "bf16" runs it in bfloat16, "fp32" in float32, "auto" picks bf16
        where the CPU has native bfloat16 (AVX-512 BF16 or AMX; `CPU_BF16_TOLERANCE`). On a
        GPU the network runs in float16 whatever this says.

        `mirror_average`: the network also sees each crop's mirror image, and its volume and
        landmarks, mirrored back, are averaged with the crop's own (test-time flipping: on
        the held-in validation photos the landmark pose's 90th-percentile error on profiles
        fell from 10.0 to 8.0 degrees; see weights/MODEL_CARD.md). It doubles the network's
        work; False halves it."""
        path = Path(weights) if weights is not None else default_weights_path()
        if not path.is_file():
            raise WeightsNotFound(
                f"no model weights at {path}. The trained checkpoint ships in the repository as "
                "weights/facerecon.pt (git clone the project, or set FACERECON_WEIGHTS to a "
                "checkpoint made by `python -m training.train`)."
            )
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        model, checkpoint = load_checkpoint(path, "cpu")
        self.config = model.config
        self.info = ModelInfo(
            variant=checkpoint["variant"],
            version=str(checkpoint["meta"].get("version", "unversioned")),
            sha256=checkpoint["sha256"],
            parameters=count_parameters(model),
            device=str(self.device),
            input_size=model.config.input_size,
            slices=model.config.slices,
        )
        self.model = fold_batchnorm(model).to(self.device, memory_format=torch.channels_last)
        # Half precision on the GPU. On the CPU bfloat16 where the CPU has it natively:
        # channels-last bf16 weights measured ~40 % faster than fp32 (issue 18), and ~10 %
        # faster than fp32 weights under bf16 autocast.
        self.cpu_bf16 = self.device.type == "cpu" and _cpu_bf16(precision)
        self.dtype = (
            torch.float16 if self.device.type == "cuda"
            else torch.bfloat16 if self.cpu_bf16 else torch.float32
        )  # fmt: skip
        self.model = self.model.to(self.dtype)
        model = self.model
        self._heads = lambda x: _last_heads(model, x)
        if compile:
            self._heads = torch.compile(self._heads, mode="max-autotune-no-cudagraphs")
        self.max_pixels = max_pixels
        self.mirror_average = mirror_average
        # head pose from the volume by a small CNN (CPU, ~ms); None: geometric fallback
        self.pose_model = load_pose_model(pose_weights, path)
        # optional: None unless installed ($FACERECON_FACE_MODEL or the default location)
        self.face_model = load_face_model(face_model)
        self.detector_path = detector_path(detector, beside=path)
        self.detector = None
        if self.detector_path is not None:
            if not self.detector_path.is_file() and self.detector_path == SHIPPED_DETECTOR:
                raise FileNotFoundError(
                    f"the shipped face detector {SHIPPED_DETECTOR} is missing (restore it from "
                    "the repository, name another model, or pass detector=None / --detector "
                    "none to take each photo as a face crop)"
                )
            self.detector = load_detector(self.detector_path)

    @property
    def predicts_landmarks(self) -> bool:
        """Whether the network has a landmark head (`Reconstruction.landmarks68`)."""
        return self.config.landmarks > 0

    def warmup(self) -> None:
        blank = np.zeros((self.info.input_size, self.info.input_size, 3), np.float32)
        self._forward(np.stack([blank]))
        if self.face_model is not None:
            prepare_fit(self.face_model)
            prepare_atlas(self.face_model)

    def prepare(
        self,
        data: bytes | np.ndarray,
        face_box: Sequence[float] | None = None,
        landmarks: np.ndarray | Sequence[Sequence[float]] | None = None,
    ) -> PreparedFace:
        timings: dict[str, float] = {}
        with _Timer(timings, "decode"):
            if isinstance(data, np.ndarray):
                image = _check_array(data)
            else:
                image = decode_image(data, max_pixels=self.max_pixels)
        source, found, notes = "request", None, []
        with _Timer(timings, "crop"):
            if face_box is None and landmarks is None:
                source, face = "whole_image", None
                if self.detector is not None:
                    face, found = self._detected_face(image)
                    if face is None:
                        notes.append(NO_FACE_FOUND)
                    else:
                        source, landmarks = "detector", found.landmarks
                if face is None:
                    face = normalise_face(image)
            else:
                face = normalise_face(image, box=face_box, landmarks=landmarks)
        if landmarks is not None:  # checked by normalise_face
            landmarks = np.asarray(landmarks, np.float64)
        return PreparedFace(
            image,
            _as_float(face.image),
            face.transform,
            timings,
            landmarks,
            face_source=source,
            face_box=None if found is None else found.box,
            notes=notes,
        )

    def _detected_face(self, image: np.ndarray) -> tuple[FaceCrop | None, Detection | None]:
        """The largest detected face that makes a crop (a face box in the margins, or too small
        to hold 3D detail, is passed over), or (None, None)."""
        for detection in self.detector.detect(image):
            try:
                face = normalise_face(image, box=detection.box, landmarks=detection.landmarks)
            except InputError:
                continue
            return face, detection
        return None, None

    def predict(self, faces: Sequence[PreparedFace]) -> list[CoarseVolume]:
        """One forward pass over a batch: each face's occupancy volume (slices, size, size),
        kept as the network's coarse logits (`CoarseVolume`: `.probability()` or
        `np.asarray` makes the full volume in [0, 1]). A network with a landmark head also
        sets each face's `predicted_landmarks`."""
        start = time.perf_counter()
        logits, points = self._forward(np.stack([f.crop for f in faces]))
        elapsed = (time.perf_counter() - start) * 1000.0
        for i, f in enumerate(faces):
            f.timings_ms["network"] = elapsed
            if points is not None:  # crop pixels -> image pixels
                t = f.transform
                f.predicted_landmarks = (points[i] - [t.tx, t.ty]) / t.scale
        factor = self.info.input_size // logits.shape[-1]
        return [CoarseVolume(volume, factor) for volume in logits]

    @torch.inference_mode()
    def _forward(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The network's last logits before its upsampling, (N, slices, 48, 48) float32, and
        its landmarks in crop pixels, (N, 68, 2) float64 (None without a landmark head)."""
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).to(self.device, self.dtype)
        if self.mirror_average:
            x = torch.cat([x, x.flip(-1)])
        x = x.contiguous(memory_format=torch.channels_last)
        logits, heatmaps = self._heads(x)
        logits = logits.float()
        points = None
        if heatmaps is not None:
            points = heatmap_points(heatmaps, self.info.input_size).double()
        if self.mirror_average:
            logits, points = _mirror_mean(logits, points, self.info.input_size)
        points = None if points is None else points.cpu().numpy()
        return logits.cpu().contiguous().numpy(), points

    def finish(
        self, face: PreparedFace, volume: CoarseVolume | np.ndarray, options: ReconstructOptions
    ) -> Reconstruction:
        options.validate()
        self.check_available(options)
        timings = dict(face.timings_ms)
        with _Timer(timings, "mesh"):
            mesh = surface_mesh(volume)
            if mesh.vertices.shape[0] == 0:
                raise InputError(
                    "no face surface was reconstructed from this image; send a photo in which "
                    "a face fills most of the frame, or give its face_box",
                    field="image",
                )
            if options.decimate_faces is not None and len(mesh.faces) > options.decimate_faces:
                mesh = decimate(mesh, options.decimate_faces)
            t = face.transform
            mesh = sample_colors(to_image_space(mesh, t.scale, t.tx, t.ty), face.image)
        pose = None
        if options.pose or options.frontal or options.chips or options.target_pose is not None:
            with _Timer(timings, "pose"):
                pose = self.head_pose(volume, mesh, face.predicted_landmarks)
        registration = texture = None
        if options.registration:
            with _Timer(timings, "registration"):
                registration = register(
                    mesh, self.face_model, pose, landmarks=registration_landmarks(face)
                )
            # the fitted head's pose is the answer from here on (pose, frontal and matched
            # views, chips): the registered views need the fit's own pose, and on the held-in
            # validation photos it was about as close to the labels as the pose that starts
            # it (round 4: the landmark head's) or closer (round 3: half the volume's error)
            pose = registration.pose
            with _Timer(timings, "texture"):
                texture = bake_texture(registration, face.image, self.face_model)
            if options.registration_region == "face":
                registration = face_region(registration, self.face_model)
        # the mesh the views show: the reconstruction, or the registered model textured
        shown = registered_mesh(registration, texture) if options.registered_views else mesh
        # every view with the full rotation (y-up frame) that turned the mesh into it
        rendered: list[tuple[View, np.ndarray]] = []
        with _Timer(timings, "render"):
            # every view in one call: (yaw, pitch) label and the turn that shows it
            wanted = [((yaw, pitch), rotation_matrix(yaw, pitch)) for yaw, pitch in options.views]
            if options.frontal:
                wanted.append(((0.0, 0.0), pose.matrix().T))
            if options.target_pose is not None:
                target = options.target_pose
                wanted.append(((target.yaw, target.pitch), turn_to(pose, target)))
            if wanted:
                turns = np.stack([turn for _, turn in wanted])
                images = render_views(shown, [(0.0, 0.0)] * len(wanted), options.view_size,
                                      options.background, rotation=turns)  # fmt: skip
                for ((yaw, pitch), turn), image in zip(wanted, images, strict=True):
                    rendered.append((View(yaw, pitch, image), turn))
        if options.chips or options.visibility:
            with _Timer(timings, "chips"):
                landmarks = seen = None
                if options.chips:
                    landmarks = (
                        registration.landmarks68_3d
                        if registration is not None
                        else template_landmarks68(
                            mesh, pose, face.transform, face.predicted_landmarks
                        )
                    )
                if options.visibility:
                    seen = seen_vertices(shown)
                rendered = [
                    (_annotated(view, turn, shown, landmarks, seen, options.chips), turn)
                    for view, turn in rendered
                ]
        views = [view for view, _ in rendered[: len(options.views)]]
        extra = iter(view for view, _ in rendered[len(options.views) :])
        frontal = next(extra) if options.frontal else None
        matched = next(extra) if options.target_pose is not None else None
        return Reconstruction(
            mesh=mesh,
            views=views,
            frontal=frontal,
            pose=pose if options.pose else None,
            transform=face.transform,
            timings_ms=timings,
            model=self.info,
            registration=registration,
            texture=texture,
            matched=matched,
            face_source=face.face_source,
            face_box=face.face_box,
            notes=list(face.notes),
            landmarks68=face.predicted_landmarks,
        )

    def head_pose(
        self,
        volume: CoarseVolume | np.ndarray,
        mesh: Mesh,
        landmarks: np.ndarray | None = None,
    ) -> Pose:
        """The pose of the network's 68 `landmarks` where it has a landmark head; else the
        learned pose from the volume, or without pose weights the geometric one. (On the
        held-in validation photos of round 4 the landmarks' pose had the best 90th percentile
        on profiles, where misses are largest, though not the best median everywhere: see
        weights/MODEL_CARD.md.)"""
        if landmarks is not None:
            return pose_from_landmarks(landmarks)
        if self.pose_model is None:
            return estimate_pose(mesh)
        with single_threaded():
            return estimate_volume_pose(self.pose_model, volume)

    def estimate_pose(
        self,
        data: bytes | np.ndarray,
        face_box: Sequence[float] | None = None,
        landmarks: np.ndarray | Sequence[Sequence[float]] | None = None,
    ) -> Pose:
        """The head pose in a photo (e.g. the one a pose-matched view should copy)."""
        face = self.prepare(data, face_box=face_box, landmarks=landmarks)
        (volume,) = self.predict([face])
        return self.finish(face, volume, POSE_ONLY).pose

    def check_available(self, options: ReconstructOptions) -> None:
        """FeatureUnavailable if `options` need something not installed (the face model)."""
        if options.registration and self.face_model is None:
            raise FeatureUnavailable(FACE_MODEL_MISSING)

    def __call__(
        self,
        data: bytes | np.ndarray,
        face_box: Sequence[float] | None = None,
        landmarks: np.ndarray | Sequence[Sequence[float]] | None = None,
        options: ReconstructOptions | None = None,
        pose_reference: bytes | np.ndarray | None = None,
    ) -> Reconstruction:
        """`pose_reference`: a second photo whose head pose `Reconstruction.matched` copies
        (it sets `options.target_pose`)."""
        options = options or ReconstructOptions()
        options.validate()
        if pose_reference is not None:
            options = replace(options, target_pose=self.reference_pose(pose_reference))
        self.check_available(options)
        face = self.prepare(data, face_box=face_box, landmarks=landmarks)
        (volume,) = self.predict([face])
        return self.finish(face, volume, options)

    def reference_pose(self, data: bytes | np.ndarray) -> Pose:
        """`estimate_pose` of a pose-reference photo; its errors name that field."""
        try:
            return self.estimate_pose(data)
        except InputError as error:
            raise InputError(
                f"pose reference image: {error.message}", field="options.pose_reference_image"
            ) from None


POSE_ONLY = ReconstructOptions(frontal=False, pose=True)


def _mirror_mean(
    logits: torch.Tensor, points: torch.Tensor | None, size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The answers for N crops then their N mirror images -> N answers: each crop's averaged
    with its mirror image's, mirrored back (x flipped; left and right points swapped)."""
    n = len(logits) // 2
    logits = (logits[:n] + logits[n:].flip(-1)) / 2
    if points is not None:
        mirrored = points[n:, IBUG68_MIRROR]
        mirrored[..., 0] = size - 1 - mirrored[..., 0]  # pixel centres: i <-> size - 1 - i
        points = (points[:n] + mirrored) / 2
    return logits, points


def _last_heads(
    model: torch.nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The last stack's volume logits and the landmark heatmaps (or None)."""
    stacks, heatmaps = model.forward_heads(x)
    return stacks[-1], heatmaps


def _annotated(
    view: View,
    rotation: np.ndarray,
    mesh: Mesh,
    landmarks68: np.ndarray | None,
    seen: np.ndarray | None,
    layouts: tuple[str, ...],
) -> View:
    """`view` with its chips (from the 68 landmarks projected like the view) and its
    visibility (from the seen vertices)."""
    size = view.image.shape[0]
    chips, points5, mask, fraction = {}, None, None, None
    if landmarks68 is not None:
        points = project(mesh, landmarks68, rotation, size)
        points5 = layout_points(points, ARCFACE_112)
        for name in layouts:
            layout = LAYOUTS[name]
            chips[name] = align_chip(view.image, layout_points(points, layout), layout)
    if seen is not None:
        masks, fractions = visibility_masks(mesh, seen, [(0.0, 0.0)], size, rotation)
        mask, fraction = masks[0], float(fractions[0])
    return replace(view, chips=chips, points5=points5, visibility=mask, visible_fraction=fraction)


PRECISIONS = ("auto", "bf16", "fp32")
# how far bf16 may move the network's logits from fp32, as a fraction of the largest fp32
# logit: at most this, a tenth of it on average (tests/test_reconstructor.py, random weights:
# up to 2.5 % / 0.26 %; the shipped weights on photos: 0.9 % / 0.1 %, the sign of 0.08-0.09 %
# of the voxels flips, all at the surface; held-out NME unchanged)
CPU_BF16_TOLERANCE = 0.04


def _cpu_bf16(precision: str | None) -> bool:
    precision = precision or os.environ.get("FACERECON_PRECISION", "auto")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())  # fmt: skip
    return precision == "bf16"


def _check_array(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError("an image array must be uint8 RGB of shape (H, W, 3)", field="image")
    if min(image.shape[:2]) < 32:
        raise InputError("image is smaller than 32 pixels on a side", field="image")
    return np.ascontiguousarray(image)


def _as_float(crop: np.ndarray) -> np.ndarray:
    if crop.dtype == np.uint8:
        return crop.astype(np.float32) / 255.0
    return crop.astype(np.float32, copy=False)
