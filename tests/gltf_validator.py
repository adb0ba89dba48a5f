"""The Khronos glTF validator (tests/gltf: `make tools` installs it with npm) on GLB bytes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

GLTF = Path(__file__).resolve().parent / "gltf"
NODE = shutil.which("node")

needs_validator = pytest.mark.skipif(
    NODE is None or not (GLTF / "node_modules" / "gltf-validator").is_dir(),
    reason="the glTF validator is not installed: `make tools` (needs npm)",
)


def validation_report(glb: bytes, folder: Path) -> dict:
    """The validator's `issues`: numErrors, numWarnings, ..., messages."""
    path = folder / "checked.glb"
    path.write_bytes(glb)
    done = subprocess.run([NODE, str(GLTF / "validate.mjs"), str(path)], capture_output=True,
                          text=True, check=True, timeout=120)  # fmt: skip
    return json.loads(done.stdout)
