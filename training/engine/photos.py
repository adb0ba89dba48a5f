"""Real face photos (UTKFace crops) used as textures and backgrounds.

The crops are aligned, so each photo's five YuNet landmarks (eyes, nose tip, mouth
corners) are enough to project a frontal model face onto it. Landmarks are detected once
and cached next to the run outputs. The last 5 % of the sorted file names are held out of
training for honest real-photo checks (`split="heldout"`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import torch

HELDOUT_FRACTION = 0.05
PHOTO_SIZE = 200


def utk_files(photo_dir: str | Path, split: str) -> list[Path]:
    """Sorted UTKFace crops of one split: "train" (first 95 %) or "heldout" (last 5 %)."""
    files = sorted(Path(photo_dir).glob("*.jpg"))
    cut = int(round(len(files) * (1 - HELDOUT_FRACTION)))
    if split == "train":
        return files[:cut]
    if split == "heldout":
        return files[cut:]
    raise ValueError(f"unknown split {split!r}")


def detect_five_points(files: list[Path], yunet_model: str | Path) -> np.ndarray:
    """(N, 5, 2) float32 YuNet landmarks per photo (image-left eye first); NaN if none."""
    detector = cv2.FaceDetectorYN.create(str(yunet_model), "", (PHOTO_SIZE, PHOTO_SIZE), 0.6)
    points = np.full((len(files), 5, 2), np.nan, dtype=np.float32)
    for i, path in enumerate(files):
        image = cv2.imread(str(path))
        if image is None:
            continue
        detector.setInputSize((image.shape[1], image.shape[0]))
        _, faces = detector.detect(image)
        if faces is not None and len(faces):
            best = faces[np.argmax(faces[:, -1])]
            points[i] = best[4:14].reshape(5, 2)
    return points


class PhotoBank:
    """Photos with landmarks; `load(indices)` gives a (N, 3, 200, 200) float batch."""

    def __init__(self, files: list[Path], points: np.ndarray):
        ok = np.isfinite(points).all(axis=(1, 2))
        self.files = [f for f, keep in zip(files, ok, strict=True) if keep]
        self.points = torch.from_numpy(points[ok])
        if not self.files:
            raise ValueError("no usable photos")

    def __len__(self) -> int:
        return len(self.files)

    @classmethod
    def from_directory(
        cls,
        photo_dir: str | Path,
        yunet_model: str | Path,
        cache_dir: str | Path,
        split: str = "train",
        limit: int | None = None,
    ) -> PhotoBank:
        files = utk_files(photo_dir, split)[:limit]
        key = hashlib.sha256("\n".join(f.name for f in files).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"utk_points_{split}_{key}.npy"
        if cache.exists():
            points = np.load(cache)
        else:
            points = detect_five_points(files, yunet_model)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, points)
        return cls(files, points)

    def load(self, indices: list[int]) -> torch.Tensor:
        images = []
        for i in indices:
            bgr = cv2.imread(str(self.files[i]))
            if bgr.shape[:2] != (PHOTO_SIZE, PHOTO_SIZE):
                bgr = cv2.resize(bgr, (PHOTO_SIZE, PHOTO_SIZE), interpolation=cv2.INTER_AREA)
            images.append(bgr[:, :, ::-1])
        batch = torch.from_numpy(np.ascontiguousarray(np.stack(images)))
        return batch.permute(0, 3, 1, 2).float() / 255.0
