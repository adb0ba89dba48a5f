"""The web gateway's pieces that need no server: the in-memory result store (bounded by
age, count and bytes) and the photo signature check."""

from __future__ import annotations

import pytest

from facerecon_web.store import ResultStore
from facerecon_web.upload import sniff


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_results_expire_after_their_ttl():
    clock = Clock()
    store = ResultStore(ttl_s=10, max_items=4, max_bytes=1000, clock=clock)
    key = store.put({"glb": b"glTF...", "obj": b"v 0 0 0"})
    assert store.get(key, "glb") == b"glTF..." and store.get(key, "ply") is None
    clock.now = 9.9
    assert store.get(key, "obj") == b"v 0 0 0"
    clock.now = 10.0
    assert store.get(key, "glb") is None and len(store) == 0


def test_oldest_results_go_first_beyond_the_count_and_byte_caps():
    store = ResultStore(ttl_s=60, max_items=2, max_bytes=100, clock=Clock())
    first, second, third = (store.put({"glb": bytes(10)}) for _ in range(3))
    assert store.get(first, "glb") is None
    assert store.get(second, "glb") and store.get(third, "glb")
    big = store.put({"glb": bytes(95)})  # 10 + 95 > 100: only the newest stays
    assert len(store) == 1 and store.get(big, "glb") is not None


def test_ids_are_unguessable_and_unique():
    store = ResultStore(ttl_s=60, max_items=100, max_bytes=1 << 20, clock=Clock())
    keys = {store.put({}) for _ in range(100)}
    assert len(keys) == 100 and all(len(k) >= 20 for k in keys)
    assert store.get("not-a-key", "glb") is None


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"BM\x36\x00\x00\x00", "image/bmp"),
        (b"GIF89a", None),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"<svg xmlns=", None),
        (b"", None),
    ],
)
def test_sniff_recognises_the_allowed_formats_only(data, media_type):
    assert sniff(data) == media_type
