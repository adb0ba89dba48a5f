"""Reconstructed meshes held in memory for a short while, for the download buttons.

Bounded by count, bytes and age, oldest dropped first; never written anywhere. Ids are
random (unguessable), so one visitor cannot fetch another's mesh.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StoredResult:
    files: dict[str, bytes]  # "glb" / "ply" / "obj" -> file bytes
    expires_at: float

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())


class ResultStore:
    def __init__(
        self,
        ttl_s: float,
        max_items: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ttl_s = ttl_s
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.clock = clock
        self._items: OrderedDict[str, StoredResult] = OrderedDict()

    def put(self, files: dict[str, bytes]) -> str:
        """Keep `files`; returns the id to fetch them by."""
        key = secrets.token_urlsafe(16)
        self._items[key] = StoredResult(dict(files), self.clock() + self.ttl_s)
        self._evict()
        return key

    def get(self, key: str, kind: str) -> bytes | None:
        """The file of kind `kind` stored under `key`, or None if unknown or expired."""
        self._evict()
        item = self._items.get(key)
        return None if item is None else item.files.get(kind)

    def __len__(self) -> int:
        return len(self._items)

    def _evict(self) -> None:
        now = self.clock()
        while self._items and (
            next(iter(self._items.values())).expires_at <= now
            or len(self._items) > self.max_items
            or sum(item.size for item in self._items.values()) > self.max_bytes
        ):
            self._items.popitem(last=False)
