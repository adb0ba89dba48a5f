"""`facerecon-client`: reconstruct photos on a facerecon server, or show what it serves.

    facerecon-client reconstruct localhost:50051 face.jpg more/ --out out/ --views -45,0,45
    facerecon-client reconstruct localhost:50051 photos/ --out out/ --batch   # one stream
    facerecon-client reconstruct localhost:50051 face.jpg --out out/ --registration
    facerecon-client info localhost:50051

Connection flags (or FACERECON_TOKEN for the token): --tls, --ca, --cert/--key (mutual TLS).
A server that is still starting (its model loading) is waited for, --ready-timeout seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf import json_format
from tqdm import tqdm

from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import types_pb2 as types
from facerecon_client.client import FaceReconClient
from facerecon_client.ready import DEFAULT_READY_TIMEOUT_S, ServerNotReady
from facerecon_client.requests import build_request
from facerecon_client.results import bad_request_fields

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def parse_angles(text: str) -> list[tuple[float, float]]:
    """'-60,0,60' -> yaws at pitch 0; 'YAW:PITCH' items give both, e.g. '30:10,-30:10'."""
    angles = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        yaw, _, pitch = item.partition(":")
        try:
            angles.append((float(yaw), float(pitch or 0.0)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad view angle {item!r}: use YAW or YAW:PITCH"
            ) from None
    return angles


def iter_photos(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def connect(args: argparse.Namespace, announce: bool = True) -> FaceReconClient:
    token = args.token or os.environ.get("FACERECON_TOKEN")
    return FaceReconClient(
        args.target,
        tls=args.tls,
        root_certificates=args.ca,
        certificate_chain=args.cert,
        private_key=args.key,
        token=token,
        ready_timeout_s=args.ready_timeout,
        on_wait=(lambda m: print(f"facerecon-client: {m}", file=sys.stderr)) if announce else None,
    )


def notes_of(reply: pb.ReconstructResponse) -> str:
    """What the server said about a reply, e.g. that it found no face, for the progress line."""
    return "".join(f" [{note}]" for note in reply.notes)


def save(reply: pb.ReconstructResponse, stem: str, out: Path, mesh_format: str) -> list[Path]:
    """Write the mesh, the views and the pose/timings JSON; returns the files written."""
    written = [out / f"{stem}.{mesh_format}"]
    written[0].write_bytes(getattr(reply.mesh, mesh_format))
    views = [(f"{stem}_yaw{v.yaw_deg:+.0f}_pitch{v.pitch_deg:+.0f}", v) for v in reply.views]
    if reply.HasField("frontal_view"):
        views.append((f"{stem}_frontal", reply.frontal_view))
    for name, view in views:
        suffix = "jpg" if view.format == types.IMAGE_FORMAT_JPEG else "png"
        path = out / f"{name}.{suffix}"
        path.write_bytes(view.image)
        written.append(path)
    summary = {
        "model": json_format.MessageToDict(reply.model),
        "pose": json_format.MessageToDict(reply.pose) if reply.HasField("pose") else None,
        "timings_ms": dict(reply.timings_ms),
        "face_source": types.FaceSource.Name(reply.face_source),
        "notes": list(reply.notes),
    }
    if reply.HasField("detected_face"):
        summary["detected_face"] = json_format.MessageToDict(reply.detected_face)
    if reply.landmarks68.xy:  # the network's 68 points, [[x, y], ...] image pixels
        xy = [round(v, 1) for v in reply.landmarks68.xy]
        summary["landmarks68"] = [list(p) for p in zip(xy[::2], xy[1::2], strict=True)]
    if reply.HasField("registration"):  # the fitted face model: textured GLB and its figures
        reg, xy = reply.registration, list(reply.registration.landmarks68_2d.xy)
        written.append(out / f"{stem}_registered.glb")
        written[-1].write_bytes(reply.mesh.textured_glb)
        summary["registration"] = {
            "pose": json_format.MessageToDict(reg.pose),
            "scale_px_per_cm": reg.scale,
            "fit_error_px": reg.fit_error,
            "inlier_fraction": reg.inlier_fraction,
            "landmarks68_2d": [[x, y] for x, y in zip(xy[::2], xy[1::2], strict=True)],
            "expression": dict(zip(reg.expression_names, reg.expression, strict=True)),
        }
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return written


def describe_error(error: grpc.RpcError) -> str:
    fields = bad_request_fields(error)
    where = "; ".join(f"{f}: {d}" for f, d in fields.items())
    return f"{error.code().name}: {where or error.details()}"


def cmd_reconstruct(args: argparse.Namespace) -> int:
    photos = list(iter_photos(args.photos))
    if not photos:
        print("no photos found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    registration = args.registration or args.registered_views
    options = dict(
        mesh_encodings=(args.format, "textured_glb") if registration else (args.format,),
        views=args.views,
        view_size=args.size,
        frontal_view=args.frontal,
        pose=True,
        decimate_faces=args.decimate,
        registration=registration,
        view_source="registered" if args.registered_views else "raw",
        registration_region="face" if args.face_only else "head",
    )
    failures = 0
    progress = tqdm(total=len(photos), unit="face", disable=args.quiet, file=sys.stderr)
    with connect(args) as client:
        if args.batch:  # one stream; request ids are the photos' indices
            requests = (
                build_request(p, request_id=str(i), **options) for i, p in enumerate(photos)
            )
            for reply in client.reconstruct_stream(requests):
                photo = photos[int(reply.request_id)]
                if reply.HasField("error"):
                    failures += 1
                    fields = bad_request_fields(reply.error)
                    detail = (
                        "; ".join(f"{f}: {d}" for f, d in fields.items()) or reply.error.message
                    )
                    progress.write(f"{photo}: FAILED: {detail}", file=sys.stderr)
                else:
                    save(reply.response, photo.stem, args.out, args.format)
                    if reply.response.notes:
                        progress.write(f"{photo}:{notes_of(reply.response)}", file=sys.stderr)
                progress.update()
        else:
            for photo in photos:
                try:
                    reply = client.reconstruct(photo.read_bytes(), request_id=photo.name, **options)
                    save(reply, photo.stem, args.out, args.format)
                    if reply.notes:
                        progress.write(f"{photo}:{notes_of(reply)}", file=sys.stderr)
                except grpc.RpcError as error:
                    failures += 1
                    progress.write(f"{photo}: FAILED: {describe_error(error)}", file=sys.stderr)
                progress.update()
    progress.close()
    return 1 if failures else 0


def cmd_wait(args: argparse.Namespace) -> int:
    """Until the server serves (exit 0), --ready-timeout passes or the --while-pid process is
    gone (exit 1): for scripts, and for `make run` to say when the model is loaded."""
    end = time.monotonic() + args.ready_timeout
    with connect(args, announce=False) as client:
        while True:
            step = min(2.0, max(0.0, end - time.monotonic()))
            try:
                client.wait_until_ready(step, wait_for_connection=True)
            except ServerNotReady:
                if time.monotonic() >= end or not _alive(args.while_pid):
                    raise ServerNotReady(
                        f"the server at {args.target} was not serving after "
                        f"{args.ready_timeout:g} s"
                        if time.monotonic() >= end
                        else f"process {args.while_pid} ended before {args.target} served"
                    ) from None
                continue
            print(f"{args.target} is serving")
            return 0


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_info(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.model_info()
    print(json_format.MessageToJson(info, preserving_proto_field_name=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facerecon-client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def connection(p: argparse.ArgumentParser) -> None:
        p.add_argument("target", help="HOST:PORT of the server")
        p.add_argument("--tls", action="store_true", help="use TLS (system root certificates)")
        p.add_argument("--ca", type=Path, help="PEM root certificates to trust (implies --tls)")
        p.add_argument("--cert", type=Path, help="PEM client certificate (mutual TLS)")
        p.add_argument("--key", type=Path, help="PEM client private key (mutual TLS)")
        p.add_argument("--token", help="bearer token (default: $FACERECON_TOKEN)")
        p.add_argument(
            "--ready-timeout",
            type=float,
            default=DEFAULT_READY_TIMEOUT_S,
            metavar="SECONDS",
            help="wait this long for a server that is starting or loading its model "
            "(0: do not wait; default: %(default).0f)",
        )

    rec = sub.add_parser("reconstruct", help="reconstruct photos (files or folders)")
    connection(rec)
    rec.add_argument("photos", nargs="+", type=Path)
    rec.add_argument("--out", type=Path, required=True, help="output folder")
    rec.add_argument("--format", choices=("glb", "ply", "obj"), default="glb")
    rec.add_argument(
        "--views",
        type=parse_angles,
        default=parse_angles("-60,-30,0,30,60"),
        help="comma-separated YAW or YAW:PITCH in degrees ('' for none)",
    )
    rec.add_argument("--size", type=int, default=256, help="view size in pixels")
    rec.add_argument("--frontal", action="store_true", help="also render the frontal view")
    rec.add_argument("--decimate", type=int, default=None, help="target triangle count")
    rec.add_argument(
        "--registration",
        action="store_true",
        help="also fit the server's face model: STEM_registered.glb (textured), pose, landmarks",
    )
    rec.add_argument(
        "--registered-views",
        action="store_true",
        help="render views from the textured registered mesh (implies --registration)",
    )
    rec.add_argument(
        "--face-only",
        action="store_true",
        help="the registered facial mask alone: no ears, scalp or neck (with --registration)",
    )
    rec.add_argument("--batch", action="store_true", help="send all photos over one stream")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")

    info = sub.add_parser("info", help="show the served model and the server's limits")
    connection(info)

    wait = sub.add_parser(
        "wait", help="wait until the server serves (its model loaded): exit 0, else 1"
    )
    connection(wait)
    wait.add_argument(
        "--while-pid", type=int, help="give up as soon as this process (the server) is gone"
    )
    return parser


def join_negative_values(argv: list[str], options: tuple[str, ...] = ("--views",)) -> list[str]:
    """argparse reads '--views -60,0,60' as two flags; glue such a value to its flag."""
    joined: list[str] = []
    values = iter(argv)
    for arg in values:
        if arg in options:
            value = next(values, None)
            joined.append(arg if value is None else f"{arg}={value}")
        else:
            joined.append(arg)
    return joined


def main(argv: list[str] | None = None) -> int:
    argv = join_negative_values(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(argv)
    try:
        commands = {"reconstruct": cmd_reconstruct, "info": cmd_info, "wait": cmd_wait}
        return commands[args.command](args)
    except grpc.RpcError as error:
        print(f"facerecon-client: {describe_error(error)}", file=sys.stderr)
        return 1
    except ServerNotReady as error:
        print(f"facerecon-client: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
