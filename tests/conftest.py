"""Shared fixtures: a tiny random-weight checkpoint and real photos that packages ship."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerecon.models import create_model, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A vrn-tiny checkpoint with random weights (tests never train)."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, create_model("vrn-tiny"), "vrn-tiny", meta={"version": "test"})
    return path


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins), cropped around her face."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[20:220, 120:320])


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED
