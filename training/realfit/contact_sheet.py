"""Contact sheet of the real-photo targets: photo with its landmarks | the crop with the
fitted head's shaded surface blended over it | the target surface alone.

    python -m training.realfit.contact_sheet [--fits runs/realfit/fits.pt] \
        [--out training/realfit_contact_sheet.png]

Training photos only (CFP people 001-400 frontal and profile, 300-W helen_train / afw).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from training.contact_sheet import shaded
from training.engine.facemodel import load_face_model
from training.realfit.dataset import RealFaces
from training.realfit.targets import make_batch, posed_vertices

REPO = Path(__file__).resolve().parents[2]
TILE = 160


def sheet(real: RealFaces, picks: list[int], columns: int = 3) -> np.ndarray:
    f = {k: v[picks] for k, v in real.fits.items()}
    vertices = posed_vertices(real.model, f["identity"], f["expression"], f["rotation"],
                              f["scale"], f["translation"])  # fmt: skip
    images = [real.images[i] for i in picks]
    g = torch.Generator().manual_seed(0)
    batch = make_batch(real.model, images, vertices, f["yaw"], f["pitch"], f["roll"], g,
                       (1.0, 1.0), 0.0, 0.0)  # fmt: skip
    depth = torch.where(batch.mask, batch.front, 0.0)
    surface = (shaded(depth, batch.mask) * 255).numpy().astype(np.uint8)
    rows = []
    for k in range(len(picks)):
        photo = images[k].copy()
        lm = vertices[k, real.model.landmarks68, :2].numpy()
        for x, y in lm:
            cv2.circle(photo, (int(x), int(y)), max(1, photo.shape[1] // 120), (0, 255, 0), -1)
        crop = (batch.image[k].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        over = crop.copy()
        mask = batch.mask[k].numpy()
        over[mask] = (0.45 * over[mask] + 0.55 * surface[k][mask][:, None]).astype(np.uint8)
        tiles = [cv2.resize(t, (TILE, TILE), interpolation=cv2.INTER_AREA)
                 for t in (photo, over, np.repeat(surface[k][..., None], 3, -1))]  # fmt: skip
        rows.append(np.concatenate(tiles, 1))
    while len(rows) % columns:
        rows.append(np.full_like(rows[0], 255))
    return np.concatenate([np.concatenate(rows[c::columns], 0) for c in range(columns)], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fits", default=str(REPO / "runs/realfit/fits.pt"))
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--out", default=str(REPO / "training/realfit_contact_sheet.png"))
    args = parser.parse_args()
    model = load_face_model(Path(args.shared) / "facemodel")
    real = RealFaces(model, args.fits, args.shared)
    yaw = real.fits["yaw"].abs()
    profiles = torch.nonzero(yaw > 55).squeeze(1)
    others = torch.nonzero(yaw <= 55).squeeze(1)
    g = torch.Generator().manual_seed(1)
    picks = profiles[torch.randperm(len(profiles), generator=g)[:9]].tolist()
    picks += others[torch.randperm(len(others), generator=g)[:9]].tolist()
    Image.fromarray(sheet(real, picks)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
