"""Generate the Python code for the facerecon.v1 contract into service/facerecon/v1/.

    python proto/generate.py

The generated modules are committed (the proto package `facerecon.v1` becomes the Python
package `facerecon.v1`), so `pip install` and Docker builds need no protoc step;
tests/test_proto.py fails whenever they drift from the .proto files. Rerun this after every
change to proto/facerecon/v1/*.proto and commit the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
CONTRACT = sorted((PROTO_ROOT / "facerecon" / "v1").glob("*.proto"))
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto


def _protoc(*args: str, files: list[Path] = CONTRACT) -> None:
    files = [str(p.relative_to(PROTO_ROOT)) for p in files]
    if protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{WELL_KNOWN}", *args, *files]) != 0:
        raise RuntimeError("protoc failed (see its messages above)")


def generate(out: Path = REPO / "service") -> None:
    """Write *_pb2.py and *_pb2.pyi for every contract file, service_pb2_grpc.py for the
    service, under `out` (the directory that holds the `facerecon` package)."""
    _protoc(f"--python_out={out}", f"--pyi_out={out}")
    _protoc(f"--grpc_python_out={out}", files=[PROTO_ROOT / "facerecon" / "v1" / "service.proto"])


def descriptor_set(path: Path) -> None:
    """Write the contract's FileDescriptorSet (what the committed modules must embed)."""
    _protoc(f"--descriptor_set_out={path}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "service")
