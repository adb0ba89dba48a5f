"""Recognition-ready views: five-point face chips, and which pixels of a view were seen.

Face recognisers take a face *aligned* by a similarity transform that puts five points where
their template says. A rendered view has no detector landmarks, but the reconstruction knows
where the landmarks are in 3D, so they can be projected through the same rotation as the view
(they exist even where the photo hid an eye):

- with the face model registered (`Reconstruction.registration`), its 68 landmarks;
- otherwise, where the network has a landmark head, its 68 points in the photo, at the depths
  of the mean face turned by the estimated pose (`template_landmarks68(..., points)`);
- otherwise `template_landmarks68`: the mean ICT face's 68 landmarks turned by the estimated
  pose and framed the way `facerecon.crop.FRAMING` framed the face in the crop (the crop's
  centre is the 68-landmark box's centre, its side 1.15 x the box's larger side), with depth
  pinned to the mesh at the nose tip. It is coarse: it ignores the face's own shape and
  expression, and it inherits the crop's framing error (a detector box frames the face to
  roughly ±5 % of its size) and the pose error (several degrees), so its points are off by
  a few percent of the face's size — fine for a chip, not for landmark metrics.

Layouts: InsightFace's ArcFace 112×112 template (`insightface.utils.face_align`) on the eye
centres, nose tip and mouth corners; dlib's 150×150 chip with 0.25 padding
(`dlib.get_face_chip_details` for its 5-point shape: the outer and inner eye corners and the
base of the nose).

Visibility: a vertex was *seen* if it faced the camera in the photo and was not hidden behind
other surface there (a z-buffer test at the photo's pose). A view's pixel is seen where its
surface interpolates seen vertices; everything else on the head was guessed by the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from insightface.utils import face_align
from scipy.spatial import cKDTree
from skimage.transform import SimilarityTransform

from facerecon.crop import FRAMING, CropTransform
from facerecon.mesh import FLIP_Y, Mesh
from facerecon.pose import Pose, rotation_matrix
from facerecon.render import FILL, render_depth, render_views

# The mean ICT face's 68 landmarks (iBUG order) in the y-up camera frame of a frontal head:
# x, y relative to the centre of their (x, y) box, in units of its larger side; z relative to
# their mean. From ict_face_light.npz: neutral[landmarks68].
TEMPLATE68 = np.array(
    [
        [-0.500, 0.294, -0.392], [-0.494, 0.146, -0.374], [-0.471, 0.013, -0.333],
        [-0.445, -0.115, -0.289], [-0.389, -0.260, -0.225], [-0.292, -0.377, -0.142],
        [-0.207, -0.425, -0.045], [-0.104, -0.448, 0.057], [0.000, -0.469, 0.068],
        [0.104, -0.448, 0.057], [0.207, -0.425, -0.045], [0.292, -0.377, -0.142],
        [0.389, -0.260, -0.225], [0.445, -0.115, -0.289], [0.471, 0.013, -0.333],
        [0.494, 0.146, -0.374], [0.500, 0.294, -0.392], [-0.395, 0.398, -0.104],
        [-0.335, 0.450, -0.030], [-0.258, 0.469, 0.027], [-0.164, 0.465, 0.071],
        [-0.080, 0.446, 0.088], [0.080, 0.446, 0.088], [0.164, 0.465, 0.071],
        [0.258, 0.469, 0.027], [0.335, 0.450, -0.030], [0.395, 0.398, -0.104],
        [0.000, 0.299, 0.088], [0.000, 0.223, 0.141], [0.000, 0.154, 0.195],
        [0.000, 0.072, 0.247], [-0.085, -0.033, 0.097], [-0.041, -0.033, 0.135],
        [0.000, -0.037, 0.145], [0.041, -0.033, 0.135], [0.085, -0.033, 0.097],
        [-0.303, 0.278, -0.057], [-0.263, 0.308, -0.005], [-0.189, 0.312, 0.006],
        [-0.125, 0.265, -0.016], [-0.185, 0.254, -0.001], [-0.262, 0.253, -0.014],
        [0.125, 0.265, -0.016], [0.189, 0.312, 0.006], [0.263, 0.308, -0.005],
        [0.303, 0.278, -0.057], [0.262, 0.253, -0.014], [0.185, 0.254, -0.001],
        [-0.172, -0.194, 0.051], [-0.116, -0.144, 0.121], [-0.049, -0.120, 0.156],
        [0.000, -0.124, 0.163], [0.049, -0.120, 0.156], [0.116, -0.144, 0.121],
        [0.172, -0.194, 0.051], [0.122, -0.231, 0.099], [0.070, -0.248, 0.133],
        [0.000, -0.253, 0.144], [-0.070, -0.248, 0.133], [-0.122, -0.231, 0.099],
        [-0.150, -0.192, 0.047], [-0.068, -0.179, 0.112], [0.000, -0.181, 0.125],
        [0.068, -0.179, 0.112], [0.150, -0.192, 0.047], [0.073, -0.185, 0.109],
        [0.000, -0.186, 0.123], [-0.073, -0.185, 0.109],
    ]
)  # fmt: skip
NOSE_TIP = 30
# ArcFace order: the subject's right eye (image left), left eye, nose tip, mouth corners.
ARCFACE_POINTS = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47), (30,), (48,), (54,))
# dlib's 5-point shape: left eye outer, inner; right eye outer, inner; base of the nose.
DLIB_POINTS = ((45,), (42,), (36,), (39,), (33,))
# dlib's template for that shape on the unit square (dlib/image_transforms/interpolation.h)
DLIB_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
DLIB_PADDING = 0.25  # what dlib's face recognition ResNet was trained with


@dataclass(frozen=True)
class ChipLayout:
    name: str
    size: int
    template: np.ndarray  # (5, 2) chip pixels
    groups: tuple[tuple[int, ...], ...]  # 68-landmark indices averaged into each point


ARCFACE_112 = ChipLayout("arcface112", 112, face_align.arcface_dst.astype(np.float64),
                         ARCFACE_POINTS)  # fmt: skip
DLIB_150 = ChipLayout(
    "dlib150", 150, (DLIB_TEMPLATE + DLIB_PADDING) / (1 + 2 * DLIB_PADDING) * 150, DLIB_POINTS
)
LAYOUTS = {layout.name: layout for layout in (ARCFACE_112, DLIB_150)}
VISIBILITY_SIZE = 256  # z-buffer side for the seen-vertex test
DEPTH_TOLERANCE = 0.02  # of the head's radius: how far behind the z-buffer still counts as seen


def turn_to(pose: Pose, target: Pose) -> np.ndarray:
    """The y-up-frame rotation that turns a head at `pose` to `target`'s yaw and pitch,
    upright (roll 0): what a pose-matched view renders with."""
    return rotation_matrix(target.yaw, target.pitch) @ pose.matrix().T


def template_landmarks68(
    mesh: Mesh, pose: Pose, transform: CropTransform, points: np.ndarray | None = None
) -> np.ndarray:
    """68 landmarks (mesh frame, image pixels) from the mean face, the pose and the framing;
    given the face's own 68 image `points` (the network's landmark head), those points at the
    depths of the mean face scaled to them.

    See the module docstring for how coarse the framed template is.
    """
    rotated = TEMPLATE68 @ pose.matrix().T * FLIP_Y  # y down, like the mesh
    lo, hi = rotated[:, :2].min(axis=0), rotated[:, :2].max(axis=0)
    if points is None:
        face_side = transform.size / (FRAMING.side_over_face * transform.scale)  # image pixels
        scale = face_side / float((hi - lo).max())
        middle = (transform.size - 1) / 2
        centre = (np.array([middle, middle]) - (transform.tx, transform.ty)) / transform.scale
        placed = rotated * scale
        placed[:, :2] += centre - (lo + hi) / 2 * scale
    else:  # the template's projection fitted to the points by a scale (least squares)
        template = rotated[:, :2] - rotated[:, :2].mean(axis=0)
        seen = np.asarray(points, np.float64)
        scale = float((template * (seen - seen.mean(axis=0))).sum() / (template**2).sum())
        face_side = float((hi - lo).max()) * scale
        placed = rotated * scale
        placed[:, :2] = seen
    placed[:, 2] += _front_depth(mesh, placed[NOSE_TIP, :2], face_side) - placed[NOSE_TIP, 2]
    return placed.astype(np.float32)


def _front_depth(mesh: Mesh, xy: np.ndarray, face_side: float) -> float:
    """z of the surface nearest the camera around image point `xy`."""
    tree = cKDTree(mesh.vertices[:, :2])
    near = tree.query_ball_point(xy, 0.03 * face_side) or [tree.query(xy)[1]]
    return float(mesh.vertices[near, 2].max())


def project(mesh: Mesh, points: np.ndarray, rotation: np.ndarray, size: int) -> np.ndarray:
    """Pixel positions `(P, 2)` of mesh-frame `points` in a view of `mesh` rendered with the
    full y-up-frame `rotation` at `size` (the framing of `facerecon.render`)."""
    v = mesh.vertices.astype(np.float64) * FLIP_Y
    centre = v.mean(axis=0)
    radius = max(float(np.sqrt(((v - centre) ** 2).sum(axis=1).max())), 1e-6)
    scale = FILL * size / (2.0 * radius)
    turned = (np.asarray(points, np.float64) * FLIP_Y - centre) @ np.asarray(rotation).T
    half = (size - 1) / 2.0
    return np.stack([half + scale * turned[:, 0], half - scale * turned[:, 1]], axis=1)


def layout_points(landmarks68_2d: np.ndarray, layout: ChipLayout) -> np.ndarray:
    """The layout's five points `(5, 2)` from 68 projected landmarks."""
    return np.stack([landmarks68_2d[list(group)].mean(axis=0) for group in layout.groups])


def align_chip(image: np.ndarray, points: np.ndarray, layout: ChipLayout) -> np.ndarray:
    """The `layout.size` square chip of `image` (any channel count) whose five `points` land
    on the template (least-squares similarity, bilinear, zeros outside)."""
    if layout is ARCFACE_112:  # insightface's own alignment, bit for bit
        return face_align.norm_crop(image, points.astype(np.float32), image_size=112)
    similarity = SimilarityTransform.from_estimate(points, layout.template)
    return cv2.warpAffine(image, similarity.params[:2], (layout.size, layout.size),
                          flags=cv2.INTER_LINEAR, borderValue=0)  # fmt: skip


def seen_vertices(mesh: Mesh, size: int = VISIBILITY_SIZE) -> np.ndarray:
    """`(V,)` bool: the vertex faced the camera in the photo and nothing hid it there."""
    depth = render_depth(mesh, [(0.0, 0.0)], size)[0]  # the photo's own view
    v = mesh.vertices.astype(np.float64) * FLIP_Y
    centre = v.mean(axis=0)
    radius = max(float(np.sqrt(((v - centre) ** 2).sum(axis=1).max())), 1e-6)
    pixels = np.rint(project(mesh, mesh.vertices, np.eye(3), size)).astype(int)
    pixels = np.clip(pixels, 0, size - 1)
    front = depth[pixels[:, 1], pixels[:, 0]]  # NaN where nothing covers the pixel
    z = v[:, 2] - centre[2]
    with np.errstate(invalid="ignore"):
        unhidden = z >= front - DEPTH_TOLERANCE * radius
    normals = mesh.normals if mesh.normals is not None else mesh.with_normals().normals
    return unhidden & (normals[:, 2] > 0.0)


def visibility_masks(
    mesh: Mesh, seen: np.ndarray, angles: list[tuple[float, float]], size: int,
    rotation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per view `(N, size, size)` bool seen pixels and `(N,)` seen fraction of head pixels.

    Rendered with colours (255 · seen, 255, 0): both channels are shaded alike, so red over
    green is the interpolated seen-ness, whatever the lighting.
    """
    colors = np.zeros((mesh.num_vertices, 3), np.uint8)
    colors[:, 0] = np.where(seen, 255, 0)
    colors[:, 1] = 255
    marked = Mesh(mesh.vertices, mesh.faces, colors, mesh.normals)
    images = render_views(marked, angles, size, None, rotation=rotation).astype(np.int32)
    head = images[..., 3] > 0
    masks = head & (2 * images[..., 0] >= images[..., 1])
    fractions = masks.sum(axis=(1, 2)) / np.maximum(head.sum(axis=(1, 2)), 1)
    return masks, fractions.astype(np.float64)
