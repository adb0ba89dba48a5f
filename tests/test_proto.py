"""The contract: committed generated code matches the .proto files, and buf lint passes."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from facerecon.v1 import service_pb2, service_pb2_grpc, types_pb2

REPO = Path(__file__).resolve().parents[1]
PROTO = REPO / "proto"
BUF = PROTO / "node_modules" / ".bin" / "buf"
GENERATED = REPO / "service" / "facerecon" / "v1"


def _generate_module():
    spec = importlib.util.spec_from_file_location("generate", PROTO / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_code_embeds_the_current_contract(tmp_path):
    """What protoc makes of the .proto files now is what the committed modules carry."""
    _generate_module().descriptor_set(tmp_path / "contract.binpb")
    built = descriptor_pb2.FileDescriptorSet.FromString((tmp_path / "contract.binpb").read_bytes())
    committed = {m.DESCRIPTOR.name: m.DESCRIPTOR.serialized_pb for m in (service_pb2, types_pb2)}
    for file in built.file:
        _drop_json_names(file.message_type)  # protoc's Python output leaves them out
    assert {f.name: f.SerializeToString() for f in built.file} == committed, (
        "generated code is stale: run `python proto/generate.py` and commit the result"
    )


def _drop_json_names(messages) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


def test_regenerating_reproduces_the_committed_files(tmp_path):
    """Byte-for-byte, when the installed grpcio-tools is the one that made the files."""
    source = (GENERATED / "service_pb2_grpc.py").read_text()
    made_with = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", source).group(1)
    if made_with != version("grpcio-tools"):
        pytest.skip(f"committed code was made by grpcio-tools {made_with}")
    _generate_module().generate(tmp_path)
    for path in sorted(GENERATED.glob("*_pb2*.py*")):
        fresh = tmp_path / "facerecon" / "v1" / path.name
        assert fresh.read_text() == path.read_text(), f"{path.name} is stale"
    assert sorted(p.name for p in (tmp_path / "facerecon" / "v1").iterdir()) == sorted(
        p.name for p in GENERATED.glob("*_pb2*.py*")
    )


def test_service_shape():
    service = service_pb2.DESCRIPTOR.services_by_name["FaceReconService"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "Reconstruct": (False, False),
        "ReconstructStream": (True, True),
        "GetModelInfo": (False, False),
    }
    assert hasattr(service_pb2_grpc, "FaceReconServiceStub")


@pytest.fixture(scope="module")
def buf() -> Path:
    """buf from proto/node_modules, installed with npm (pinned in proto/package-lock.json)."""
    if not BUF.exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            pytest.skip("node/npm are not installed: cannot install buf")
        subprocess.run(
            [npm, "ci", "--prefix", str(PROTO), "--no-audit", "--no-fund"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return BUF


def test_buf_lint_passes(buf):
    result = subprocess.run([buf, "lint", "proto"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_an_undocumented_field(buf, tmp_path):
    """The lint really runs on our files: an uncommented field is reported."""
    copy = tmp_path / "proto"
    shutil.copytree(PROTO, copy, ignore=shutil.ignore_patterns("node_modules"))
    types = copy / "facerecon" / "v1" / "types.proto"
    types.write_text(
        types.read_text().replace("  float x0 = 1;", "  float x0 = 1;\n  float oops = 9;")
    )
    result = subprocess.run([buf, "lint", str(copy)], capture_output=True, text=True)
    assert result.returncode != 0 and "oops" in result.stdout + result.stderr
