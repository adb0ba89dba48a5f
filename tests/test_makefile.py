"""`make setup` installs only when pyproject.toml or the Makefile changed (issue 17 item 7)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_setup_runs_pip_only_when_the_project_changed(tmp_path):
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)

    def up_to_date() -> bool:  # `make -q`: 0 when nothing would run, without running it
        run = subprocess.run(["make", "-q", "setup", "PYTHON=python3"], cwd=tmp_path,
                             capture_output=True)  # fmt: skip
        return run.returncode == 0

    assert not up_to_date()  # a fresh clone installs
    stamp = tmp_path / ".setup-stamp-python3"
    stamp.touch()  # what a finished install leaves
    assert up_to_date()
    later = stamp.stat().st_mtime + 10
    os.utime(tmp_path / "pyproject.toml", (later, later))  # a dependency changed
    assert not up_to_date()
