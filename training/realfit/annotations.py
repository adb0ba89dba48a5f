"""The real photos with landmarks in ../shared: CFP (30 points, profiles too) and 300-W (68).

Splits (issue "Real photos with 3D targets"): training may use CFP people 001-400,
300-W `helen_train` and `afw`, less a validation split of them (`is_validation`); CFP
people 401-450 and `helen_test` are the held-out real-photo yardstick: fitted as its labels,
never trained on, never tuned on.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HELD_OUT_CFP = range(401, 451)
HELD_OUT_300W = ("helen_test",)
# Validation: held-in photos that training leaves out, so that choices (A/Bs, settings) are
# made on photos no training step saw -- and never on the held-out ones.
VALIDATION_CFP = range(391, 401)
VALIDATION_EVERY = 10  # every 10th 300-W helen_train / afw photo (by the CRC of its path)


def is_validation(path: str, subset: str, person: int) -> bool:
    if subset == "cfp":
        return person in VALIDATION_CFP
    return subset in ("helen_train", "afw") and zlib.crc32(path.encode()) % VALIDATION_EVERY == 0


@dataclass(frozen=True)
class Photo:
    path: str  # relative to the shared folder
    points: np.ndarray  # (L, 2) float32, 0-based pixel centres
    scheme: str  # "ibug68", "cfp_frontal" or "cfp_profile"
    subset: str  # "cfp", "helen_train", "helen_test" or "afw"
    person: int  # CFP identity 1-450; -1 for 300-W (every face its own person)
    held_out: bool


def cfp_photos(shared: str | Path, people: range | list[int] = range(1, 451)) -> list[Photo]:
    root = Path(shared)
    photos = []
    for person in people:
        for view, count in (("frontal", 10), ("profile", 4)):
            for k in range(1, count + 1):
                rel = f"realfaces/cfp/images/{person:03d}/{view}/{k:02d}.jpg"
                txt = root / f"realfaces/cfp/fiducials/{person:03d}/{view}/{k:02d}.txt"
                points = np.loadtxt(txt, delimiter=",", dtype=np.float32).reshape(30, 2)
                photos.append(Photo(rel, points, f"cfp_{view}", "cfp", person,
                                    person in HELD_OUT_CFP))  # fmt: skip
    return photos


def w300_photos(shared: str | Path, subsets=("helen_train", "afw", "helen_test")) -> list[Photo]:
    root = Path(shared)
    photos = []
    for subset in subsets:
        for txt in sorted((root / "realfaces/300w/landmarks" / subset).glob("*.txt")):
            rel = f"realfaces/300w/images/{subset}/{txt.stem}.jpg"
            points = np.loadtxt(txt, dtype=np.float32).reshape(68, 2)
            photos.append(Photo(rel, points, "ibug68", subset, -1, subset in HELD_OUT_300W))
    return photos
