"""Export a training checkpoint as the service's weights, with a version and licence notes.

    python -m training.export --checkpoint runs/vrn-light-cpu/model.pt \
        --out weights/facerecon.pt --version vrn-light-cpu-1

Re-saves the fp16 weights with `meta.version` (shown by the service) and `meta.licences`,
then reloads the file and checks one forward pass gives a finite volume.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from facerecon.models import file_sha256, load_checkpoint, save_checkpoint

LICENCES = (
    "Shapes: ICT FaceKit (MIT). Textures and backgrounds: UTKFace photos, non-commercial "
    "research use only. Real training photos (runs with real_share > 0): CFP (people "
    "001-400) and 300-W (HELEN train, AFW) with their landmark annotations, research use "
    "only, not for commercial use. The copyright of each photo stays with its owner."
)


def export(checkpoint: str | Path, out: str | Path, version: str) -> str:
    model, info = load_checkpoint(checkpoint)
    meta = {**info["meta"], "version": version, "licences": LICENCES,
            "exported_from_sha256": info["sha256"]}  # fmt: skip
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model, info["variant"], meta)
    reloaded, _ = load_checkpoint(out)
    with torch.no_grad():
        volume = torch.sigmoid(reloaded(torch.full((1, 3, 192, 192), 0.5)))
    if not torch.isfinite(volume).all():
        raise RuntimeError(f"{out}: the exported network gives non-finite outputs")
    return file_sha256(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", default="weights/facerecon.pt")
    parser.add_argument("--version", required=True)
    args = parser.parse_args()
    digest = export(args.checkpoint, args.out, args.version)
    print(f"wrote {args.out} (sha256 {digest})")


if __name__ == "__main__":
    main()
