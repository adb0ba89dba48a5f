"""`facerecon` command: reconstruct photos, show the model, serve gRPC."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from facerecon.registration import Registration

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
EXPORTERS = ("glb", "ply", "obj")


def parse_angles(text: str) -> tuple[tuple[float, float], ...]:
    """'-60,0,60' -> yaws at pitch 0; 'yaw:pitch' items give both, e.g. '30:10,-30:10'."""
    if not text.strip():
        return ()
    angles = []
    for item in text.split(","):
        yaw, _, pitch = item.partition(":")
        try:
            angles.append((float(yaw), float(pitch or 0.0)))
        except ValueError as error:
            message = f"bad view angle {item!r}: use YAW or YAW:PITCH"
            raise argparse.ArgumentTypeError(message) from error
    return tuple(angles)


def iter_photos(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from facerecon import export
    from facerecon.errors import FeatureUnavailable, InputError
    from facerecon.reconstructor import ReconstructOptions, Reconstructor, WeightsNotFound

    if args.face_model is not None and not args.face_model.is_file():
        print(f"facerecon: no face model at {args.face_model}", file=sys.stderr)
        return 2
    try:
        reconstructor = Reconstructor(
            args.weights, device=args.device, detector=args.detector, face_model=args.face_model,
            mirror_average=args.mirror_average,
        )  # fmt: skip
    except (FileNotFoundError, RuntimeError) as error:  # a detector file missing or foreign
        if isinstance(error, WeightsNotFound):
            raise
        print(f"facerecon: {error}", file=sys.stderr)
        return 2
    options = ReconstructOptions(
        views=args.views,
        view_size=args.size,
        frontal=True,
        decimate_faces=args.decimate,
        registration=args.registration or args.registered_views,
        registered_views=args.registered_views,
        registration_region="face" if args.face_only else "head",
    )
    try:
        reconstructor.check_available(options)
    except FeatureUnavailable as error:
        print(f"facerecon: {error}", file=sys.stderr)
        return 2
    to_mesh = {"glb": export.to_glb, "ply": export.to_ply, "obj": export.to_obj}[args.format]
    photos = list(iter_photos(args.photos))
    if not photos:
        print("no photos found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    progress = tqdm(photos, unit="face", disable=len(photos) < 2 or args.quiet, file=sys.stderr)
    for photo, stem in zip(progress, output_stems(photos), strict=True):
        try:
            result = reconstructor(photo.read_bytes(), options=options)
        except (InputError, OSError) as error:
            failures += 1
            progress.write(f"{photo}: FAILED: {error}", file=sys.stderr)
            continue
        files = {f"{stem}.{args.format}": to_mesh(result.mesh)}
        for view in result.views:
            name = f"{stem}_yaw{view.yaw:+.0f}_pitch{view.pitch:+.0f}.png"
            files[name] = export.to_png(view.image)
        if result.frontal is not None:
            files[f"{stem}_frontal.png"] = export.to_png(result.frontal.image)
        for name, data in files.items():
            (args.out / name).write_bytes(data)
        written = list(files)
        if result.registration is not None:
            written += save_registration(result.registration, result.texture, args.out, stem)
        pose = result.pose
        total = sum(result.timings_ms.values())
        notes = "".join(f" [{note}]" for note in result.notes)
        progress.write(
            f"{photo}: {len(result.mesh.vertices)} vertices, {len(result.mesh.faces)} faces, "
            f"yaw {pose.yaw:+.0f}° pitch {pose.pitch:+.0f}° roll {pose.roll:+.0f}°, "
            f"{total:.0f} ms{notes} -> {args.out}{os.sep}: {', '.join(written)}"
        )
    return 1 if failures else 0


def output_stems(photos: list[Path]) -> list[str]:
    """Each photo's output name: its file name without the last suffix (`a.v1.jpg` -> `a.v1`),
    with `_2`, `_3`, ... added where two photos would share one (`a.jpg` and `a.png`, or the
    same name in two folders), so that no photo's files overwrite another's."""
    stems: list[str] = []
    taken: set[str] = set()
    for photo in photos:
        stem, n = photo.stem, 1
        while stem.casefold() in taken:
            n += 1
            stem = f"{photo.stem}_{n}"
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


def save_registration(
    registration: Registration, texture: np.ndarray, out: Path, stem: str
) -> list[str]:
    """STEM_registered.glb and .obj/.mtl/.png (textured) and STEM_registration.json; returns
    the names of the files written."""
    import json

    from facerecon.export import to_png
    from facerecon.texture import to_textured_glb, to_textured_obj

    name, png = f"{stem}_registered", to_png(texture)
    files = {f"{name}.glb": to_textured_glb(registration, png)}
    files.update(to_textured_obj(registration, png, name=name))
    for file, data in files.items():
        (out / file).write_bytes(data)
    r = registration
    figures = {
        "topology": r.topology,
        "pose": {"yaw_deg": r.pose.yaw, "pitch_deg": r.pose.pitch, "roll_deg": r.pose.roll},
        "scale_px_per_cm": r.scale,
        "fit_error_px": r.fit_error,
        "inlier_fraction": r.inlier_fraction,
        "landmarks68_2d": r.landmarks68_2d.tolist(),
        "landmarks68_3d": r.landmarks68_3d.tolist(),
        "identity": r.identity.tolist(),
        "expression": dict(zip(r.expression_names, r.expression.tolist(), strict=True)),
    }
    lines = ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in figures.items())
    (out / f"{stem}_registration.json").write_text("{\n" + lines + "\n}\n")  # a key a line
    return [*files, f"{stem}_registration.json"]


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from facerecon.face_model import default_face_model_path
    from facerecon.reconstructor import Reconstructor, WeightsNotFound

    try:
        r = Reconstructor(args.weights, device=args.device, detector=args.detector,
                          face_model=args.face_model)  # fmt: skip
    except (FileNotFoundError, RuntimeError) as error:  # a detector file missing or foreign
        if isinstance(error, WeightsNotFound):
            raise
        print(f"facerecon: {error}", file=sys.stderr)
        return 2
    info = r.info
    print(f"model      {info.variant} ({info.parameters / 1e6:.1f}M parameters)")
    print(f"version    {info.version}")
    print(f"sha256     {info.sha256}")
    print(f"input      {info.input_size}x{info.input_size} RGB -> {info.slices}-slice volume")
    threads = torch.get_num_threads()
    print(f"device     {info.device} (torch {torch.__version__}, {threads} threads)")
    if r.detector is not None:
        print(f"detector   {r.detector_path}")
    else:
        print("detector   none: each photo is taken as a face crop (--detector MODEL.onnx)")
    pose = "the volume-pose network" if r.pose_model is not None else "the geometric estimate"
    if r.predicts_landmarks:
        pose = "the network's 68 landmarks (with registration: the fitted head's)"
    print(f"head pose  {pose}")
    landmarks = "the network's 68 (its landmark head)" if r.predicts_landmarks else "none"
    print(f"landmarks  {landmarks}")
    face_model = args.face_model or default_face_model_path()
    if r.face_model is not None:
        print(f"face model {face_model} (registration available)")
    else:
        print(f"face model not installed at {face_model}: registration is unavailable "
              "(facerecon import-face-model DIR, or $FACERECON_FACE_MODEL)")  # fmt: skip
    return 0


def cmd_import_face_model(args: argparse.Namespace) -> int:
    from facerecon.face_model import import_face_model, load_face_model

    try:
        path = import_face_model(args.directory, args.out)
        model = load_face_model(path)
    except (OSError, ValueError, KeyError) as error:
        print(f"facerecon: cannot import the face model: {error}", file=sys.stderr)
        return 2
    print(f"face model: {model.num_vertices} head vertices, {model.identity_basis.shape[0]} "
          f"identity modes, {len(model.expression_names)} expressions -> {path}")  # fmt: skip
    return 0


def cmd_serve(args: argparse.Namespace, rest: list[str]) -> int:
    from facerecon.server import main as serve_main

    return serve_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facerecon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--weights",
            type=Path,
            default=None,
            help="checkpoint (default: $FACERECON_WEIGHTS or weights/facerecon.pt)",
        )
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")  # fmt: skip

    rec = sub.add_parser("reconstruct", help="reconstruct photos (files or folders)")
    rec.add_argument("photos", nargs="+", type=Path)
    rec.add_argument("--out", type=Path, required=True, help="output folder")
    rec.add_argument("--format", choices=EXPORTERS, default="glb")
    rec.add_argument("--views", type=parse_angles, default=parse_angles("-60,-30,0,30,60"),
                     help="comma-separated YAW or YAW:PITCH in degrees ('' for none)")  # fmt: skip
    rec.add_argument("--size", type=int, default=256, help="view size in pixels")
    rec.add_argument("--decimate", type=int, default=None, help="target face count")
    rec.add_argument("--no-mirror-average", dest="mirror_average", action="store_false",
                     help="read each face once, not also from its mirror image (half the "
                          "network time; profile poses less sure)")  # fmt: skip
    detection = rec.add_mutually_exclusive_group()
    detection.add_argument("--detector", default="default", metavar="MODEL",
                           help="face detector: a YuNet or SCRFD .onnx file, or 'none' (default: "
                                "$FACERECON_DETECTOR as for the server, else the shipped YuNet); "
                                "where it finds no face the whole photo is taken as the face "
                                "crop, and the summary line says so")  # fmt: skip
    detection.add_argument("--no-detector", dest="detector", action="store_const", const=None,
                           help="take every photo whole as a face crop (a passport-style photo "
                                "the face fills)")  # fmt: skip
    rec.add_argument("--registration", action="store_true",
                     help="also fit the ICT face model: STEM_registered.glb and .obj (textured), "
                          "STEM_registration.json (pose, 68 landmarks, coefficients)")  # fmt: skip
    rec.add_argument("--registered-views", action="store_true",
                     help="render the views from the textured registered mesh (implies "
                          "--registration)")  # fmt: skip
    rec.add_argument("--face-only", action="store_true",
                     help="the registered facial mask alone (no ears, scalp or neck)")  # fmt: skip
    rec.add_argument("--face-model", type=Path, default=None,
                     help="ICT face model npz (default: $FACERECON_FACE_MODEL or "
                          "~/.local/share/facerecon/ict_face_light.npz)")  # fmt: skip
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    model_args(rec)

    info = sub.add_parser("info", help="show the model, the device, and whether the face "
                          "detector and the face model are available and where from")  # fmt: skip
    model_args(info)
    info.add_argument("--detector", default="default", metavar="MODEL",
                      help="as for reconstruct (default: $FACERECON_DETECTOR, else the shipped "
                           "YuNet)")  # fmt: skip
    info.add_argument("--face-model", type=Path, default=None,
                      help="as for reconstruct (default: $FACERECON_FACE_MODEL or "
                           "~/.local/share/facerecon/ict_face_light.npz)")  # fmt: skip

    face = sub.add_parser(
        "import-face-model", help="install the ICT face model from a FaceXModel folder"
    )
    face.add_argument("directory", type=Path, help="the FaceXModel folder (OBJ files)")
    face.add_argument("--out", type=Path, default=None,
                      help="npz to write (default: $FACERECON_FACE_MODEL or "
                           "~/.local/share/facerecon/ict_face_light.npz)")  # fmt: skip

    sub.add_parser("serve", help="run the gRPC server (see `facerecon serve --help`)",
                   add_help=False)  # fmt: skip
    return parser


def join_negative_values(argv: list[str], option: str = "--views") -> list[str]:
    """argparse takes '--views -60,0,60' for two options; glue the value to its flag."""
    joined = list(argv)
    for i, arg in enumerate(joined[:-1]):
        if arg == option:
            joined[i : i + 2] = [f"{option}={joined[i + 1]}"]
            break
    return joined


def main(argv: list[str] | None = None) -> int:
    argv = join_negative_values(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return cmd_serve(argparse.Namespace(), argv[1:])
    args = build_parser().parse_args(argv)
    from facerecon.reconstructor import WeightsNotFound

    try:
        commands = {"reconstruct": cmd_reconstruct, "info": cmd_info,
                    "import-face-model": cmd_import_face_model}  # fmt: skip
        return commands[args.command](args)
    except WeightsNotFound as error:
        print(f"facerecon: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
