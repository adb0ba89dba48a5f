"""Reading an uploaded photo: declared type, size cap, and the file's own signature.

The browser sends the photo as the raw request body (Content-Type: the file's type), not as
a multipart form: the body is read into memory under the size cap and never spooled to a
temporary file, so nothing a user sends touches the disk.
"""

from __future__ import annotations

from starlette.requests import Request

from facerecon_web.errors import GatewayError

# The formats the service decodes (proto: JPEG, PNG, WebP or BMP) and their file signatures.
ALLOWED_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp")
_NAMES = "JPEG, PNG, WebP or BMP"


def sniff(data: bytes) -> str | None:
    """The media type that `data`'s first bytes identify, among ALLOWED_TYPES, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    return None


async def read_photo(request: Request, max_bytes: int) -> bytes:
    """The request body if it is an allowed image of at most `max_bytes`; else GatewayError
    415 (type) or 413 (size), raised before reading further than the cap."""
    declared = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if declared not in ALLOWED_TYPES:
        raise GatewayError(415, f"Please upload a {_NAMES} photo (got {declared or 'no type'}).")
    too_big = GatewayError(413, f"The photo is larger than {max_bytes / (1 << 20):.0f} MB.")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_big
    if not body:
        raise GatewayError(400, "The upload is empty.")
    if sniff(body) is None:
        raise GatewayError(415, f"This file is not a {_NAMES} image.")
    return bytes(body)
