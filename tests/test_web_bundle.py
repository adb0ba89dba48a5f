"""The committed browser bundle (clients/web/facerecon_web/static/app.js) is what
clients/web/src and the pinned packages of package-lock.json build, byte for byte, so the
demo runs without node and nobody ships a stale or hand-edited bundle."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[1] / "clients" / "web"
STATIC = WEB / "facerecon_web" / "static"
ESBUILD = WEB / "node_modules" / ".bin" / "esbuild"


def test_lock_pins_the_declared_versions():
    package = json.loads((WEB / "package.json").read_text())
    locked = json.loads((WEB / "package-lock.json").read_text())["packages"]
    declared = package["dependencies"] | package["devDependencies"]
    for name, version in declared.items():
        assert locked[f"node_modules/{name}"]["version"] == version, name


@pytest.mark.skipif(not ESBUILD.exists(), reason="run `npm ci` in clients/web to check the bundle")
def test_bundle_is_reproducible_from_the_sources(tmp_path):
    script = json.loads((WEB / "package.json").read_text())["scripts"]["build"]
    program, *args = shlex.split(script)
    assert program == "esbuild"
    out = tmp_path / "app.js"
    args = [f"--outfile={out}" if a.startswith("--outfile=") else a for a in args]
    subprocess.run([str(ESBUILD), *args], cwd=WEB, check=True, capture_output=True, timeout=120)
    for name in ("app.js", "app.js.LEGAL.txt"):
        rebuilt, committed = (tmp_path / name).read_bytes(), (STATIC / name).read_bytes()
        assert rebuilt == committed, f"{name} is stale: run `npm run build` in clients/web"
