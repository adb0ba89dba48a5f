"""Face profiling (Zhu et al., CVPR 2016, how 300W-LP reached large poses): a near-frontal
real photo with its fitted head becomes the same face turned further.

The fitted head is turned about its own centre by `delta_yaw`; each vertex keeps the photo
colour it had where the camera saw it (a hidden vertex takes its mirror image's, the face
being near symmetric), the turned head is drawn with those colours over the photo, and the
part of the old head that the turned one no longer covers is filled from its surroundings
(OpenCV inpainting), so no second face shows. Hair, ears, neck and background stay where
they were: simpler than 300W-LP's anchored background mesh, and marked (`RealFaces`'
`profiling` share) so that training can A/B it.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from training.engine.facemodel import FaceModel
from training.engine.geometry import rotation_matrices
from training.engine.raster import pixel_barycentrics, rasterize


def turn(
    vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, delta_yaw: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(V, 3) posed vertices (pixels, y down) turned by `delta_yaw` about their centre, with
    the fit's new rotation (3, 3) and translation (2,)."""
    turn_cam = rotation_matrices(torch.tensor([delta_yaw]), torch.zeros(1), torch.zeros(1))[0]
    flip = torch.tensor([1.0, -1.0, 1.0])  # pixels (y down) <-> camera frame (y up)
    centre = vertices.mean(0)
    turned = ((vertices - centre) * flip) @ turn_cam.T * flip + centre
    origin = torch.cat([translation, torch.zeros(1)])  # where the model origin projects
    new_origin = ((origin - centre) * flip) @ turn_cam.T * flip + centre
    return turned, turn_cam @ rotation, new_origin[:2]


def profile_photo(
    model: FaceModel, photo: np.ndarray, vertices: torch.Tensor, turned: torch.Tensor,
    mirror: torch.Tensor,
) -> np.ndarray:  # fmt: skip
    """`photo` with the head at `vertices` (pixels) redrawn at `turned`."""
    h, w = photo.shape[:2]
    size = max(h, w)
    before = rasterize(vertices[None], model.triangles, size)
    # a vertex is seen where it is (nearly) the front surface at its pixel
    px = vertices[:, 0].round().long().clamp(0, size - 1)
    py = vertices[:, 1].round().long().clamp(0, size - 1)
    front = before.front[0, py, px]
    inside = (
        (vertices[:, 0] >= 0) & (vertices[:, 0] < w) & (vertices[:, 1] >= 0) & (vertices[:, 1] < h)
    )
    # within 3 % of the face's width of the front surface: a pixel's front is the nearest of
    # the several triangles that meet there
    tolerance = 0.03 * (vertices[:, 0].amax() - vertices[:, 0].amin())
    seen = inside & (vertices[:, 2] >= front - tolerance)
    source = torch.where(seen[:, None], vertices[:, :2], vertices[mirror, :2])
    known = seen | seen[mirror]

    after = rasterize(turned[None], model.triangles, size)
    triangle = after.triangle[0]
    covered = triangle >= 0
    corners = turned[None][:, model.triangles]
    bary = pixel_barycentrics(corners, after.triangle, size)[0]
    tri = model.triangles[triangle.clamp_min(0)]  # (S, S, 3)
    uv = (bary[..., None] * source[tri]).sum(2)  # (S, S, 2)
    valid = covered & (bary[..., None] * known[tri, None].float()).sum(2).squeeze(-1).gt(0.99)
    valid = valid[:h, :w].numpy()
    uv = uv[:h, :w].numpy().astype(np.float32)
    drawn = cv2.remap(photo, uv[..., 0], uv[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT)  # fmt: skip

    # the old head, grown by a tenth of the face's width (the real face, ears and cheeks
    # reach past the fitted head), less what the turned head covers, is filled in
    grow = max(3, int(0.1 * float(vertices[:, 0].amax() - vertices[:, 0].amin())))
    old = before.mask[0, :h, :w].numpy().astype(np.uint8)
    old = cv2.dilate(old, np.ones((grow, grow), np.uint8)).astype(bool)
    new = covered[:h, :w].numpy()
    hole = (old & ~new).astype(np.uint8) * 255
    background = cv2.inpaint(photo, hole, 5, cv2.INPAINT_TELEA)
    out = background.copy()
    out[valid] = drawn[valid]
    # head pixels with no known colour (both halves hidden): the face's mean colour
    fill = new & ~valid
    out[fill] = drawn[valid].mean(0) if valid.any() else background[fill]
    return out
