"""What a request will take in memory, estimated before any work is done.

Admission (`facerecon.server.admission`) charges each request this many bytes against the
server's memory budget. The estimate reads only the image's header (its width and height;
nothing is decoded) and the request's options:

    cost = BASE                                   volume (200×192×192 float32), crop, mesh
         + PER_IMAGE_PIXEL × decoded pixels       the RGB photo and its working copies
         + PER_VIEW_PIXEL × views × view_size²    z-buffers, colour, alpha, PNG/JPEG
         + ANNOTATED                              with chips or visibility masks
         + PER_ENCODING × mesh encodings          OBJ / PLY / GLB / raw bytes and the reply
         + REGISTRATION                           when the face model is fitted (atlas, fit)
         (+ BASE + PER_IMAGE_PIXEL × pixels again for a pose-reference photo)

The constants are peak-RSS increases of one request over an idle, warm process, measured on
the 2-core development host with the shipped model (`bench/bench_reliability.py` checks that
concurrent worst-case requests stay within the budget), rounded up: an estimate that is too
high refuses work early, one that is too low lets the process outgrow its container.
Measured: 9 MP JPEG 196 MB, 40 MP 738 MB; 16 views at 1024 px 1,358 MB (1,321 MB with chips,
visibility and four encodings; 232 MB for those at 256 px); four encodings 44 MB. Re-measured
after the height-map mesh and the OpenGL renderer (issue 18): 40 MP 763 MB; 16 views at
1024 px 440 MB with OpenGL, 1,199 MB with the torch rasteriser (FACERECON_RENDERER=torch, or
no EGL): PER_VIEW_PIXEL still covers the torch fallback, so with OpenGL views are charged
about 3x what they take.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from facerecon.image import FORMATS
from facerecon.reconstructor import MAX_VIEWS, VIEW_SIZES
from facerecon.server.convert import ParsedRequest

MiB = 1 << 20
BASE = 64 * MiB
PER_IMAGE_PIXEL = 20
PER_VIEW_PIXEL = 84
ANNOTATED = 64 * MiB
PER_ENCODING = 16 * MiB
REGISTRATION = 160 * MiB
ENCODINGS = 6  # RAW, GLB, PLY, OBJ, TEXTURED_GLB, TEXTURED_OBJ


def image_pixels(data: bytes, max_pixels: int) -> int:
    """Width × height from the image's header, at most `max_pixels` (larger images are
    refused from the header anyway); 0 when the header cannot be read (decoding will refuse
    the image before any pixel is held)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
    except Exception:  # anything unreadable: the decoder gives the client the reason
        return 0
    return min(max(0, width) * max(0, height), max_pixels)


def estimate(
    pixels: int,
    rendered: int,
    view_size: int,
    annotated: bool,
    encodings: int,
    registration: bool,
    reference_pixels: int | None = None,
) -> int:
    """Bytes by the formula above: `rendered` images of `view_size`², `annotated` with chips
    or visibility masks, `reference_pixels` for a pose-reference photo (None: none)."""
    views = PER_VIEW_PIXEL * rendered * view_size**2 + (ANNOTATED if annotated else 0)
    cost = BASE + PER_IMAGE_PIXEL * pixels + views + PER_ENCODING * encodings
    if registration:
        cost += REGISTRATION
    if reference_pixels is not None:
        cost += BASE + PER_IMAGE_PIXEL * reference_pixels
    return cost


def request_cost(parsed: ParsedRequest, max_pixels: int) -> int:
    """Bytes `parsed` is expected to hold at its peak."""
    o = parsed.options
    reference = parsed.pose_reference
    rendered = len(o.views) + int(o.frontal) + int(o.target_pose is not None or bool(reference))
    return estimate(
        image_pixels(parsed.image, max_pixels),
        rendered,
        o.view_size,
        bool(o.chips or o.visibility),
        len(parsed.encodings),
        o.registration,
        None if reference is None else image_pixels(reference, max_pixels),
    )


def worst_case(max_pixels: int = 40_000_000) -> int:
    """The most a legal request can cost: the largest photo and pose reference, every view,
    the frontal and the matched one at the largest size with chips and masks, every encoding,
    registration."""
    return estimate(max_pixels, MAX_VIEWS + 2, VIEW_SIZES[1], True, ENCODINGS, True, max_pixels)
