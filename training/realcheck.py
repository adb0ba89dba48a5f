"""Real-photo check: reconstruct real faces with a checkpoint and draw what comes out.

    python -m training.realcheck --checkpoint runs/vrn-light-cpu/model.pt \
        --out training/real_photos.png

Rows: skimage's astronaut, held-out UTKFace crops and held-out CFP profiles (people 401-450),
none of them trained on.
Columns: the network's input crop (with the landmark head's points, if it has one) |
frontal view (pose undone, photo colours) | the same untextured | untextured side view (70°
to the side of frontal). Faces are found with
YuNet from ../shared/models/yunet; the service's own crop, mesh, pose and render code runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.data
import skimage.draw
from PIL import Image

from facerecon.errors import InputError
from facerecon.mesh import Mesh
from facerecon.reconstructor import ReconstructOptions, Reconstructor
from facerecon.render import render_views
from training.engine.photos import utk_files

SIZE = 192
BACKGROUND = (255, 255, 255)


def real_photos(shared: Path, utk: int, cfp: int) -> list[tuple[str, np.ndarray]]:
    photos = [("astronaut", skimage.data.astronaut())]
    heldout = utk_files(shared / "realfaces/utkface/crop_part1", "heldout")
    for path in heldout[:: max(1, len(heldout) // utk)][:utk]:
        photos.append((path.name, np.asarray(Image.open(path).convert("RGB"))))
    # CFP people 401-450 only: round 2 trained on 001-400 (training/realfit/annotations.py)
    people = [p for p in sorted((shared / "realfaces/cfp/images").iterdir()) if int(p.name) > 400]
    for person in people[:: max(1, len(people) // cfp)][:cfp]:
        path = person / "profile" / "01.jpg"
        photos.append((f"cfp {person.name}", np.asarray(Image.open(path).convert("RGB"))))
    return photos


def row(reconstructor: Reconstructor, image: np.ndarray) -> np.ndarray:
    try:
        face = reconstructor.prepare(image)
    except InputError:  # no face detected: take the whole photo (they are face crops)
        face = reconstructor.prepare(image, face_box=(0, 0, image.shape[1], image.shape[0]))
    (volume,) = reconstructor.predict([face])
    options = ReconstructOptions(view_size=SIZE, background=BACKGROUND)
    result = reconstructor.finish(face, volume, options)
    grey = Mesh(result.mesh.vertices, result.mesh.faces, normals=result.mesh.normals)
    undo = result.pose.matrix().T
    shaded = render_views(grey, [(0.0, 0.0), (70.0, 0.0)], SIZE, BACKGROUND, rotation=undo)
    crop = (face.crop * 255).round().astype(np.uint8)
    if face.predicted_landmarks is not None:  # the landmark head's points, on the crop
        t = face.transform
        for x, y in face.predicted_landmarks * t.scale + [t.tx, t.ty]:
            rr, cc = skimage.draw.disk((y, x), 1.6, shape=crop.shape[:2])
            crop[rr, cc] = (0, 255, 0)
    tiles = [crop, result.frontal.image[..., :3], shaded[0, ..., :3], shaded[1, ..., :3]]
    return np.concatenate(tiles, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--utk", type=int, default=4)
    parser.add_argument("--cfp", type=int, default=4)
    parser.add_argument("--out", default="training/real_photos.png")
    args = parser.parse_args()
    shared = Path(args.shared)
    reconstructor = Reconstructor(
        args.checkpoint, device="cpu", detector=shared / "models/yunet/yunet_n_dynamic.onnx"
    )
    rows = []
    for name, image in real_photos(shared, args.utk, args.cfp):
        try:
            rows.append(row(reconstructor, image))
        except (InputError, ValueError) as error:  # e.g. no surface in an untrained volume
            print(f"{name}: skipped: {error}")
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(f"wrote {args.out} ({len(rows)} photos)")


if __name__ == "__main__":
    main()
