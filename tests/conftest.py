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


def make_tiny_checkpoint(path: Path) -> Path:
    """vrn-tiny with a random trunk and a head that predicts a slab: the back half of the
    volume occupied, whatever the image. Random heads predict ~0.5 everywhere, whose
    iso-surface is noise; the slab gives every test a small, known, closed surface."""
    import torch

    torch.manual_seed(0)
    model = create_model("vrn-tiny")
    head = model.heads[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.where(torch.arange(200) < 100, 6.0, -6.0))
    save_checkpoint(path, model, "vrn-tiny", meta={"version": "test"})
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny checkpoint (tests never train): see `make_tiny_checkpoint`."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt")


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
