from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FaceSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FACE_SOURCE_UNSPECIFIED: _ClassVar[FaceSource]
    FACE_SOURCE_REQUEST: _ClassVar[FaceSource]
    FACE_SOURCE_DETECTOR: _ClassVar[FaceSource]
    FACE_SOURCE_WHOLE_IMAGE: _ClassVar[FaceSource]

class MeshEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESH_ENCODING_UNSPECIFIED: _ClassVar[MeshEncoding]
    MESH_ENCODING_RAW: _ClassVar[MeshEncoding]
    MESH_ENCODING_GLB: _ClassVar[MeshEncoding]
    MESH_ENCODING_PLY: _ClassVar[MeshEncoding]
    MESH_ENCODING_OBJ: _ClassVar[MeshEncoding]
    MESH_ENCODING_TEXTURED_GLB: _ClassVar[MeshEncoding]
    MESH_ENCODING_TEXTURED_OBJ: _ClassVar[MeshEncoding]

class ViewSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIEW_SOURCE_UNSPECIFIED: _ClassVar[ViewSource]
    VIEW_SOURCE_RAW_MESH: _ClassVar[ViewSource]
    VIEW_SOURCE_REGISTERED_MESH: _ClassVar[ViewSource]

class RegistrationRegion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGISTRATION_REGION_UNSPECIFIED: _ClassVar[RegistrationRegion]
    REGISTRATION_REGION_HEAD: _ClassVar[RegistrationRegion]
    REGISTRATION_REGION_FACE: _ClassVar[RegistrationRegion]

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]

class ChipLayout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHIP_LAYOUT_UNSPECIFIED: _ClassVar[ChipLayout]
    CHIP_LAYOUT_ARCFACE_112: _ClassVar[ChipLayout]
    CHIP_LAYOUT_DLIB_150: _ClassVar[ChipLayout]
FACE_SOURCE_UNSPECIFIED: FaceSource
FACE_SOURCE_REQUEST: FaceSource
FACE_SOURCE_DETECTOR: FaceSource
FACE_SOURCE_WHOLE_IMAGE: FaceSource
MESH_ENCODING_UNSPECIFIED: MeshEncoding
MESH_ENCODING_RAW: MeshEncoding
MESH_ENCODING_GLB: MeshEncoding
MESH_ENCODING_PLY: MeshEncoding
MESH_ENCODING_OBJ: MeshEncoding
MESH_ENCODING_TEXTURED_GLB: MeshEncoding
MESH_ENCODING_TEXTURED_OBJ: MeshEncoding
VIEW_SOURCE_UNSPECIFIED: ViewSource
VIEW_SOURCE_RAW_MESH: ViewSource
VIEW_SOURCE_REGISTERED_MESH: ViewSource
REGISTRATION_REGION_UNSPECIFIED: RegistrationRegion
REGISTRATION_REGION_HEAD: RegistrationRegion
REGISTRATION_REGION_FACE: RegistrationRegion
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
CHIP_LAYOUT_UNSPECIFIED: ChipLayout
CHIP_LAYOUT_ARCFACE_112: ChipLayout
CHIP_LAYOUT_DLIB_150: ChipLayout

class FaceBox(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ...) -> None: ...

class Landmarks(_message.Message):
    __slots__ = ("xy",)
    XY_FIELD_NUMBER: _ClassVar[int]
    xy: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, xy: _Optional[_Iterable[float]] = ...) -> None: ...

class Color(_message.Message):
    __slots__ = ("r", "g", "b")
    R_FIELD_NUMBER: _ClassVar[int]
    G_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    r: int
    g: int
    b: int
    def __init__(self, r: _Optional[int] = ..., g: _Optional[int] = ..., b: _Optional[int] = ...) -> None: ...

class ViewAngle(_message.Message):
    __slots__ = ("yaw_deg", "pitch_deg")
    YAW_DEG_FIELD_NUMBER: _ClassVar[int]
    PITCH_DEG_FIELD_NUMBER: _ClassVar[int]
    yaw_deg: float
    pitch_deg: float
    def __init__(self, yaw_deg: _Optional[float] = ..., pitch_deg: _Optional[float] = ...) -> None: ...

class ReconstructOptions(_message.Message):
    __slots__ = ("mesh_encodings", "views", "view_size", "view_format", "background", "frontal_view", "pose", "decimate_faces", "chip_layouts", "visibility", "target_pose", "pose_reference_image", "registration", "view_source", "registration_region")
    MESH_ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    VIEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    VIEW_FORMAT_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    FRONTAL_VIEW_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    DECIMATE_FACES_FIELD_NUMBER: _ClassVar[int]
    CHIP_LAYOUTS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    TARGET_POSE_FIELD_NUMBER: _ClassVar[int]
    POSE_REFERENCE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    VIEW_SOURCE_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_REGION_FIELD_NUMBER: _ClassVar[int]
    mesh_encodings: _containers.RepeatedScalarFieldContainer[MeshEncoding]
    views: _containers.RepeatedCompositeFieldContainer[ViewAngle]
    view_size: int
    view_format: ImageFormat
    background: Color
    frontal_view: bool
    pose: bool
    decimate_faces: int
    chip_layouts: _containers.RepeatedScalarFieldContainer[ChipLayout]
    visibility: bool
    target_pose: Pose
    pose_reference_image: bytes
    registration: bool
    view_source: ViewSource
    registration_region: RegistrationRegion
    def __init__(self, mesh_encodings: _Optional[_Iterable[_Union[MeshEncoding, str]]] = ..., views: _Optional[_Iterable[_Union[ViewAngle, _Mapping]]] = ..., view_size: _Optional[int] = ..., view_format: _Optional[_Union[ImageFormat, str]] = ..., background: _Optional[_Union[Color, _Mapping]] = ..., frontal_view: _Optional[bool] = ..., pose: _Optional[bool] = ..., decimate_faces: _Optional[int] = ..., chip_layouts: _Optional[_Iterable[_Union[ChipLayout, str]]] = ..., visibility: _Optional[bool] = ..., target_pose: _Optional[_Union[Pose, _Mapping]] = ..., pose_reference_image: _Optional[bytes] = ..., registration: _Optional[bool] = ..., view_source: _Optional[_Union[ViewSource, str]] = ..., registration_region: _Optional[_Union[RegistrationRegion, str]] = ...) -> None: ...

class Chip(_message.Message):
    __slots__ = ("layout", "width", "height", "format", "image")
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    layout: ChipLayout
    width: int
    height: int
    format: ImageFormat
    image: bytes
    def __init__(self, layout: _Optional[_Union[ChipLayout, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., image: _Optional[bytes] = ...) -> None: ...

class RawMesh(_message.Message):
    __slots__ = ("vertex_count", "face_count", "vertices", "faces", "colors", "normals")
    VERTEX_COUNT_FIELD_NUMBER: _ClassVar[int]
    FACE_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERTICES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    COLORS_FIELD_NUMBER: _ClassVar[int]
    NORMALS_FIELD_NUMBER: _ClassVar[int]
    vertex_count: int
    face_count: int
    vertices: bytes
    faces: bytes
    colors: bytes
    normals: bytes
    def __init__(self, vertex_count: _Optional[int] = ..., face_count: _Optional[int] = ..., vertices: _Optional[bytes] = ..., faces: _Optional[bytes] = ..., colors: _Optional[bytes] = ..., normals: _Optional[bytes] = ...) -> None: ...

class Mesh(_message.Message):
    __slots__ = ("raw", "glb", "ply", "obj", "textured_glb", "textured_obj")
    RAW_FIELD_NUMBER: _ClassVar[int]
    GLB_FIELD_NUMBER: _ClassVar[int]
    PLY_FIELD_NUMBER: _ClassVar[int]
    OBJ_FIELD_NUMBER: _ClassVar[int]
    TEXTURED_GLB_FIELD_NUMBER: _ClassVar[int]
    TEXTURED_OBJ_FIELD_NUMBER: _ClassVar[int]
    raw: RawMesh
    glb: bytes
    ply: bytes
    obj: bytes
    textured_glb: bytes
    textured_obj: TexturedObj
    def __init__(self, raw: _Optional[_Union[RawMesh, _Mapping]] = ..., glb: _Optional[bytes] = ..., ply: _Optional[bytes] = ..., obj: _Optional[bytes] = ..., textured_glb: _Optional[bytes] = ..., textured_obj: _Optional[_Union[TexturedObj, _Mapping]] = ...) -> None: ...

class TexturedObj(_message.Message):
    __slots__ = ("obj", "mtl", "png")
    OBJ_FIELD_NUMBER: _ClassVar[int]
    MTL_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    obj: bytes
    mtl: bytes
    png: bytes
    def __init__(self, obj: _Optional[bytes] = ..., mtl: _Optional[bytes] = ..., png: _Optional[bytes] = ...) -> None: ...

class Registration(_message.Message):
    __slots__ = ("topology", "vertex_count", "triangle_count", "vertices", "triangles", "landmarks68_3d", "landmarks68_2d", "pose", "scale", "identity", "expression", "expression_names", "fit_error", "inlier_fraction", "texture", "uv_count", "uv", "triangle_uvs")
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    VERTEX_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRIANGLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERTICES_FIELD_NUMBER: _ClassVar[int]
    TRIANGLES_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS68_3D_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS68_2D_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_NAMES_FIELD_NUMBER: _ClassVar[int]
    FIT_ERROR_FIELD_NUMBER: _ClassVar[int]
    INLIER_FRACTION_FIELD_NUMBER: _ClassVar[int]
    TEXTURE_FIELD_NUMBER: _ClassVar[int]
    UV_COUNT_FIELD_NUMBER: _ClassVar[int]
    UV_FIELD_NUMBER: _ClassVar[int]
    TRIANGLE_UVS_FIELD_NUMBER: _ClassVar[int]
    topology: str
    vertex_count: int
    triangle_count: int
    vertices: bytes
    triangles: bytes
    landmarks68_3d: _containers.RepeatedScalarFieldContainer[float]
    landmarks68_2d: Landmarks
    pose: Pose
    scale: float
    identity: _containers.RepeatedScalarFieldContainer[float]
    expression: _containers.RepeatedScalarFieldContainer[float]
    expression_names: _containers.RepeatedScalarFieldContainer[str]
    fit_error: float
    inlier_fraction: float
    texture: bytes
    uv_count: int
    uv: bytes
    triangle_uvs: bytes
    def __init__(self, topology: _Optional[str] = ..., vertex_count: _Optional[int] = ..., triangle_count: _Optional[int] = ..., vertices: _Optional[bytes] = ..., triangles: _Optional[bytes] = ..., landmarks68_3d: _Optional[_Iterable[float]] = ..., landmarks68_2d: _Optional[_Union[Landmarks, _Mapping]] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ..., scale: _Optional[float] = ..., identity: _Optional[_Iterable[float]] = ..., expression: _Optional[_Iterable[float]] = ..., expression_names: _Optional[_Iterable[str]] = ..., fit_error: _Optional[float] = ..., inlier_fraction: _Optional[float] = ..., texture: _Optional[bytes] = ..., uv_count: _Optional[int] = ..., uv: _Optional[bytes] = ..., triangle_uvs: _Optional[bytes] = ...) -> None: ...

class View(_message.Message):
    __slots__ = ("yaw_deg", "pitch_deg", "width", "height", "format", "image", "visibility_mask", "visible_fraction", "chips", "landmarks")
    YAW_DEG_FIELD_NUMBER: _ClassVar[int]
    PITCH_DEG_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_MASK_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CHIPS_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    yaw_deg: float
    pitch_deg: float
    width: int
    height: int
    format: ImageFormat
    image: bytes
    visibility_mask: bytes
    visible_fraction: float
    chips: _containers.RepeatedCompositeFieldContainer[Chip]
    landmarks: Landmarks
    def __init__(self, yaw_deg: _Optional[float] = ..., pitch_deg: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., image: _Optional[bytes] = ..., visibility_mask: _Optional[bytes] = ..., visible_fraction: _Optional[float] = ..., chips: _Optional[_Iterable[_Union[Chip, _Mapping]]] = ..., landmarks: _Optional[_Union[Landmarks, _Mapping]] = ...) -> None: ...

class Pose(_message.Message):
    __slots__ = ("yaw_deg", "pitch_deg", "roll_deg")
    YAW_DEG_FIELD_NUMBER: _ClassVar[int]
    PITCH_DEG_FIELD_NUMBER: _ClassVar[int]
    ROLL_DEG_FIELD_NUMBER: _ClassVar[int]
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    def __init__(self, yaw_deg: _Optional[float] = ..., pitch_deg: _Optional[float] = ..., roll_deg: _Optional[float] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...
