"""decode_image: formats, colour modes, orientation, and every way client bytes can be bad."""

from __future__ import annotations

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from facerecon.errors import InputError
from facerecon.image import decode_image

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def grey_png(width: int, height: int, rows: int | None = None) -> bytes:
    """An 8-bit black PNG of width×height, built by hand; `rows` < height leaves it truncated."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * ((width + 1) * (height if rows is None else rows)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def refused(data: bytes, **kwargs) -> InputError:
    with pytest.raises(InputError) as caught:
        decode_image(data, **kwargs)
    assert caught.value.field == "image"
    return caught.value


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF", "WEBP", "JPEG"])
def test_formats_round_trip(fmt: str) -> None:
    y, x = np.mgrid[0:40, 0:56]
    pixels = np.stack([x * 4, y * 6, (x + y) * 2], axis=2).astype(np.uint8)  # smooth
    if fmt == "GIF":  # 256 colours at most
        pixels = np.asarray(Image.fromarray(pixels).quantize(64).convert("RGB"))
    kwargs = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    decoded = decode_image(encode(Image.fromarray(pixels), fmt, **kwargs))
    assert decoded.shape == (40, 56, 3) and decoded.dtype == np.uint8
    if fmt == "JPEG":
        assert np.abs(decoded.astype(int) - pixels).mean() < 3
    else:
        np.testing.assert_array_equal(decoded, pixels)


def test_exif_orientation_is_applied() -> None:
    # Stored 64 wide × 32 high, left half red; orientation 6 = rotate 90° clockwise to view.
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32], stored[:, 32:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif))
    assert decoded.shape == (64, 32, 3)
    assert np.allclose(decoded[4:28].mean(axis=(0, 1)), RED, atol=8)  # the top half
    assert np.allclose(decoded[36:60].mean(axis=(0, 1)), BLUE, atol=8)


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    values = np.array([0, 257, 1000, 32896, 65535], np.uint16)
    grey = np.tile(values, (32, 8))  # 32 × 40
    ok, data = cv2.imencode(".png", grey)
    decoded = decode_image(data.tobytes())
    assert Image.open(io.BytesIO(data.tobytes())).mode == "I;16"
    np.testing.assert_array_equal(decoded[0, :5, 0], [0, 1, 4, 128, 255])
    assert (decoded == decoded[:, :, :1]).all()


def test_sixteen_bit_rgb_png() -> None:
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, (32, 48, 3), dtype=np.uint16)
    ok, data = cv2.imencode(".png", rgb16[:, :, ::-1])  # OpenCV writes BGR
    decoded = decode_image(data.tobytes())
    np.testing.assert_allclose(decoded, rgb16 / 257.0, atol=1.0)


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (48, 48), (0, 255, 255, 0))  # pure red ink-wise
    decoded = decode_image(encode(cmyk, "JPEG", quality=95))
    assert np.allclose(decoded.mean(axis=(0, 1)), RED, atol=6)


def test_palette_png_with_a_transparent_index() -> None:
    indices = np.zeros((32, 32), np.uint8)
    indices[:, 16:] = 1
    image = Image.fromarray(indices, "P")
    image.putpalette([*RED, *BLUE] + [0] * 762)
    decoded = decode_image(encode(image, "PNG"))
    assert (decoded[:, :16] == RED).all() and (decoded[:, 16:] == BLUE).all()
    decoded = decode_image(encode(image, "PNG", transparency=1))
    assert (decoded[:, :16] == RED).all() and (decoded[:, 16:] == WHITE).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_over_white(mode: str) -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = (200, 0, 0)
    rgba[:, :16, 3] = 255  # opaque
    rgba[:, 16:, 3] = 0  # transparent: the junk underneath must not show
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    decoded = decode_image(encode(image, "PNG"))
    opaque = (200, 0, 0) if mode == "RGBA" else (60, 60, 60)  # L = 0.299 × 200
    assert np.allclose(decoded[:, :16], opaque, atol=1)
    assert (decoded[:, 16:] == WHITE).all()
    half = Image.fromarray(np.full((32, 32, 4), (255, 0, 0, 128), np.uint8), "RGBA")
    assert np.allclose(decode_image(encode(half, "PNG"))[0, 0], (255, 127, 127), atol=1)


def test_greyscale_and_bilevel() -> None:
    grey = Image.fromarray(np.full((32, 40), 77, np.uint8), "L")
    assert (decode_image(encode(grey, "PNG")) == 77).all()
    bilevel = (np.indices((32, 40)).sum(axis=0) % 2 * 255).astype(np.uint8)  # checkerboard
    decoded = decode_image(encode(Image.fromarray(bilevel).convert("1"), "BMP"))
    np.testing.assert_array_equal(decoded, np.repeat(bilevel[:, :, None], 3, axis=2))


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_give_their_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (48, 40), colour) for colour in (RED, BLUE, WHITE)]
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kwargs)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    assert (decode_image(data) == RED).all()


def test_multi_picture_jpeg_gives_its_first_picture() -> None:
    frames = [Image.new("RGB", (48, 40), colour) for colour in (RED, BLUE)]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:], quality=95)
    assert np.allclose(decode_image(data).mean(axis=(0, 1)), RED, atol=6)


def test_empty_and_non_images_are_refused() -> None:
    assert "empty" in refused(b"").message
    assert "not a supported image" in refused(b"hello, this is text").message
    assert "TIFF" in refused(encode(Image.new("RGB", (40, 40)), "TIFF")).message
    assert "HEIC" in refused(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic").message
    refused(encode(Image.new("RGB", (40, 40)), "PPM"))  # decodable by Pillow, not accepted


def test_tiny_images_are_refused() -> None:
    data = encode(Image.new("RGB", (20, 20)), "PNG")
    assert "at least 32 px" in refused(data).message
    assert "at least 32 px" in refused(encode(Image.new("RGB", (400, 20)), "PNG")).message
    assert decode_image(data, min_side=16).shape == (20, 20, 3)


def test_pixel_limit_is_checked_from_the_header() -> None:
    data = grey_png(2000, 2000)
    assert decode_image(data, max_pixels=5_000_000).shape == (2000, 2000, 3)
    start = time.perf_counter()
    assert "at most 1,000,000 pixels" in refused(data, max_pixels=1_000_000).message
    assert time.perf_counter() - start < 0.005  # decoding takes ~10 ms


def test_decompression_bomb_is_refused_without_decoding() -> None:
    data = grey_png(50_000, 50_000, rows=2)  # 2.5 Gpx: Pillow's own backstop trips in open()
    assert len(data) < 1000
    start = time.perf_counter()
    refused(data)
    refused(data, max_pixels=10**10)  # even when the caller allows it, Pillow's limit holds
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_truncated_files_are_refused(fmt: str) -> None:
    data = encode(Image.fromarray(random_rgb(256, 256)), fmt)
    for cut in (len(data) // 2, len(data) - 64):
        refused(data[:cut])


def test_truncation_guard_cannot_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(encode(Image.new("RGB", (40, 40)), "PNG"))


def _valid_files() -> list[bytes]:
    pixels = Image.fromarray(random_rgb(48, 40, seed=2))
    rgba = pixels.convert("RGBA")
    return [
        encode(pixels, "JPEG", quality=80),
        encode(pixels.convert("L"), "JPEG", progressive=True),
        encode(pixels, "PNG"),
        encode(rgba, "PNG"),
        encode(pixels.convert("P"), "GIF"),
        encode(pixels, "BMP"),
        encode(pixels, "WEBP"),
        encode(rgba, "WEBP", lossless=True),
    ]


VALID = _valid_files()
FUZZ = settings(
    max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_only_ever_raise_input_error(data: bytes) -> None:
    try:
        decode_image(data)
    except InputError:
        pass


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10**6),
)
def test_corrupted_files_only_ever_raise_input_error(
    data: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    corrupted = bytearray(data)
    for position, value in flips:
        corrupted[position % len(corrupted)] = value
    corrupted = corrupted[: max(1, len(corrupted) - cut % len(corrupted))]
    try:
        image = decode_image(bytes(corrupted))
    except InputError:
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


@settings(max_examples=60, deadline=2000, derandomize=True)
@given(
    height=st.integers(32, 120),
    width=st.integers(32, 120),
    mode=st.sampled_from(["RGB", "L", "RGBA", "P", "1"]),
    fmt=st.sampled_from(["PNG", "BMP", "WEBP", "JPEG", "GIF"]),
    seed=st.integers(0, 2**16),
)
def test_any_size_and_mode_decodes_to_rgb(
    height: int, width: int, mode: str, fmt: str, seed: int
) -> None:
    image = Image.fromarray(random_rgb(height, width, seed)).convert(mode)
    if fmt == "JPEG" and mode in ("RGBA", "P"):
        image = image.convert("RGB")
    if fmt == "BMP" and mode == "RGBA":
        image = image.convert("RGB")
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    decoded = decode_image(encode(image, fmt, **kwargs))
    assert decoded.shape == (height, width, 3) and decoded.dtype == np.uint8
    if fmt in ("PNG", "BMP", "WEBP") and mode != "RGBA":
        np.testing.assert_array_equal(decoded, np.asarray(image.convert("RGB")))
