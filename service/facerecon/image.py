"""Client bytes → a checked RGB uint8 array.

Only the decoders a face photo needs are ever run on client data: JPEG (including the
multi-picture MPO files phone cameras write), PNG (including APNG), WebP, BMP and GIF.
Animated or multi-picture files give their first frame. The pixel limit is checked from the
header, before any pixel is decoded, so a small file claiming a huge size costs nothing.

Decisions:
- EXIF orientation is applied, so the array (and every coordinate a client sends with it, such
  as a face box) is the picture as a viewer shows it. Unreadable EXIF is ignored.
- Transparency is composited over white, as a browser on a white page shows the picture;
  the RGB under fully transparent pixels is often junk and is never shown to the network.
- 16-bit channels are scaled to 8 bits (65535 → 255), never clipped. Pillow already does this
  for 16-bit RGB(A) PNG; 16-bit grey ("I;16") is scaled here.
- Embedded ICC profiles are not applied (pixel values are taken as sRGB).
- Truncated or corrupt files are refused, never padded with grey: decoding relies on Pillow's
  `ImageFile.LOAD_TRUNCATED_IMAGES` being False and checks that nobody has changed it. Pillow
  cannot see data that ends early but cleanly (a JPEG cut short and given a new end marker, a
  PNG whose compressed stream ends before the last row): those decode with flat grey or black.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageFile, ImageOps

from facerecon.errors import InputError

# Pillow format names tried on client bytes; nothing else is even attempted.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
SUPPORTED = "JPEG, PNG, WebP, BMP or GIF"

# What Pillow raises on malformed data (zlib.error and struct.error from PNG/BMP internals,
# EOFError from GIF, SyntaxError from broken PNG chunks, DecompressionBombError when a caller
# allows more pixels than Pillow's own backstop, Image.MAX_IMAGE_PIXELS).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)

# Signatures of formats people often send by mistake, to name them in the error.
_OTHER_FORMATS = (
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"%PDF", "PDF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "SVG/XML"),
)


def decode_image(data: bytes, max_pixels: int = 40_000_000, min_side: int = 32) -> np.ndarray:
    """Decode an encoded image into an upright (H, W, 3) uint8 RGB array.

    Raises InputError (field "image") for empty, unsupported, corrupt, truncated, too large
    (width × height > max_pixels) or too small (a side < min_side) images.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was set True by some other code; truncated "
            "images would decode silently as grey, so decoding is refused"
        )
    if len(data) == 0:
        raise InputError("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:  # Pillow's own backstop, far past any sane limit
        raise InputError(
            f"the image has too many pixels; at most {max_pixels:,} are accepted"
        ) from None
    except Image.UnidentifiedImageError:
        raise InputError(_unsupported_message(data)) from None
    except _DECODE_ERRORS:
        raise InputError("the image file is corrupt: its header cannot be read") from None
    with image:
        _check_size(image.size, max_pixels, min_side)
        try:
            image.load()
        except _DECODE_ERRORS:
            raise InputError(
                f"the {image.format} image is truncated or corrupt and cannot be decoded"
            ) from None
        _upright(image)
        return _to_rgb(image)


def _check_size(size: tuple[int, int], max_pixels: int, min_side: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise InputError(
            f"the image is {width}×{height} pixels; at most {max_pixels:,} pixels are accepted"
        )
    if min(width, height) < min_side:
        raise InputError(
            f"the image is {width}×{height} pixels; both sides must be at least {min_side} px"
        )


def _unsupported_message(data: bytes) -> str:
    for offset, signature, name in _OTHER_FORMATS:
        if data[offset : offset + len(signature)] == signature:
            return f"{name} files are not supported: send a {SUPPORTED} image"
    return f"not a supported image: expected {SUPPORTED}"


def _upright(image: Image.Image) -> None:
    """Apply the EXIF orientation in place; unreadable EXIF leaves the picture as stored."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except _DECODE_ERRORS:
        pass


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey (PNG); "I" holds the same 0..65535 range in 32 bits.
        grey = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        grey = ((grey * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image, mode = Image.alpha_composite(white, rgba), "RGBA"
    try:  # "RGBA" after compositing, "1", "L", "P", "CMYK", "YCbCr", ...
        rgb = image if mode == "RGB" else image.convert("RGB")
    except ValueError:
        raise InputError(f"images with colour mode {mode} are not supported") from None
    return np.array(rgb, dtype=np.uint8)
