"""The one exception for bad client input.

Everything wrong with what a client sent (undecodable bytes, an image too big or too small, a
face box outside the picture) raises `InputError`. The CLI prints it; the gRPC server answers
INVALID_ARGUMENT with a google.rpc.BadRequest field violation built from `field` and `message`.
Messages are for humans and never quote the client's data back.
"""

from __future__ import annotations


class InputError(ValueError):
    """A request the service cannot process because of what the client sent.

    `field` names the request field at fault (e.g. "image", "face_box", "landmarks").
    """

    def __init__(self, message: str, field: str = "image") -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"InputError({self.message!r}, field={self.field!r})"


class FeatureUnavailable(RuntimeError):
    """A requested feature needs something this installation lacks (e.g. the face model for
    registration). Not the client's fault in its data: the gRPC server answers
    FAILED_PRECONDITION with this message."""


FACE_MODEL_MISSING = (
    "registration needs the ICT face model, which is not installed: set FACERECON_FACE_MODEL "
    "to its .npz, or run `facerecon import-face-model DIR` on a copy of the ICT-FaceKit "
    "FaceXModel folder"
)
