from facerecon.v1 import types_pb2 as _types_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReconstructRequest(_message.Message):
    __slots__ = ("request_id", "image", "face_box", "landmarks", "options")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FACE_BOX_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    image: bytes
    face_box: _types_pb2.FaceBox
    landmarks: _types_pb2.Landmarks
    options: _types_pb2.ReconstructOptions
    def __init__(self, request_id: _Optional[str] = ..., image: _Optional[bytes] = ..., face_box: _Optional[_Union[_types_pb2.FaceBox, _Mapping]] = ..., landmarks: _Optional[_Union[_types_pb2.Landmarks, _Mapping]] = ..., options: _Optional[_Union[_types_pb2.ReconstructOptions, _Mapping]] = ...) -> None: ...

class ReconstructResponse(_message.Message):
    __slots__ = ("request_id", "mesh", "views", "frontal_view", "pose", "timings_ms", "model", "matched_view", "matched_pose", "registration", "face_source", "detected_face", "notes", "landmarks68")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESH_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    FRONTAL_VIEW_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MATCHED_VIEW_FIELD_NUMBER: _ClassVar[int]
    MATCHED_POSE_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    FACE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    DETECTED_FACE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS68_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    mesh: _types_pb2.Mesh
    views: _containers.RepeatedCompositeFieldContainer[_types_pb2.View]
    frontal_view: _types_pb2.View
    pose: _types_pb2.Pose
    timings_ms: _containers.ScalarMap[str, float]
    model: _types_pb2.ModelVersion
    matched_view: _types_pb2.View
    matched_pose: _types_pb2.Pose
    registration: _types_pb2.Registration
    face_source: _types_pb2.FaceSource
    detected_face: _types_pb2.FaceBox
    notes: _containers.RepeatedScalarFieldContainer[str]
    landmarks68: _types_pb2.Landmarks
    def __init__(self, request_id: _Optional[str] = ..., mesh: _Optional[_Union[_types_pb2.Mesh, _Mapping]] = ..., views: _Optional[_Iterable[_Union[_types_pb2.View, _Mapping]]] = ..., frontal_view: _Optional[_Union[_types_pb2.View, _Mapping]] = ..., pose: _Optional[_Union[_types_pb2.Pose, _Mapping]] = ..., timings_ms: _Optional[_Mapping[str, float]] = ..., model: _Optional[_Union[_types_pb2.ModelVersion, _Mapping]] = ..., matched_view: _Optional[_Union[_types_pb2.View, _Mapping]] = ..., matched_pose: _Optional[_Union[_types_pb2.Pose, _Mapping]] = ..., registration: _Optional[_Union[_types_pb2.Registration, _Mapping]] = ..., face_source: _Optional[_Union[_types_pb2.FaceSource, str]] = ..., detected_face: _Optional[_Union[_types_pb2.FaceBox, _Mapping]] = ..., notes: _Optional[_Iterable[str]] = ..., landmarks68: _Optional[_Union[_types_pb2.Landmarks, _Mapping]] = ...) -> None: ...

class ReconstructStreamRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: ReconstructRequest
    def __init__(self, request: _Optional[_Union[ReconstructRequest, _Mapping]] = ...) -> None: ...

class ReconstructStreamResponse(_message.Message):
    __slots__ = ("request_id", "response", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    response: ReconstructResponse
    error: _status_pb2.Status
    def __init__(self, request_id: _Optional[str] = ..., response: _Optional[_Union[ReconstructResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_receive_message_bytes", "max_send_message_bytes", "max_inflight_requests", "max_stream_inflight", "max_batch_size", "batch_max_wait_ms", "max_image_pixels", "max_views", "min_view_size", "max_view_size", "memory_budget_bytes")
    MAX_RECEIVE_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEND_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_VIEWS_FIELD_NUMBER: _ClassVar[int]
    MIN_VIEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_VIEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_receive_message_bytes: int
    max_send_message_bytes: int
    max_inflight_requests: int
    max_stream_inflight: int
    max_batch_size: int
    batch_max_wait_ms: float
    max_image_pixels: int
    max_views: int
    min_view_size: int
    max_view_size: int
    memory_budget_bytes: int
    def __init__(self, max_receive_message_bytes: _Optional[int] = ..., max_send_message_bytes: _Optional[int] = ..., max_inflight_requests: _Optional[int] = ..., max_stream_inflight: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., batch_max_wait_ms: _Optional[float] = ..., max_image_pixels: _Optional[int] = ..., max_views: _Optional[int] = ..., min_view_size: _Optional[int] = ..., max_view_size: _Optional[int] = ..., memory_budget_bytes: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model", "weights_sha256", "parameters", "input_size", "volume_slices", "device", "limits", "features")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_SLICES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    model: _types_pb2.ModelVersion
    weights_sha256: str
    parameters: int
    input_size: int
    volume_slices: int
    device: str
    limits: Limits
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[_Union[_types_pb2.ModelVersion, _Mapping]] = ..., weights_sha256: _Optional[str] = ..., parameters: _Optional[int] = ..., input_size: _Optional[int] = ..., volume_slices: _Optional[int] = ..., device: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...
