"""Networks registered by name, and checkpoints that carry their own constructor arguments."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from facerecon.models.vrn import VRN, VRNConfig, fold_batchnorm

VARIANTS: dict[str, VRNConfig] = {
    "vrn": VRNConfig(features=256, modules=3),  # the paper: ~18.5M parameters
    "vrn-light": VRNConfig(features=128, modules=4),  # ~6.2M parameters
    "vrn-tiny": VRNConfig(features=16, modules=1),  # for tests only
}


def create_model(variant: str | VRNConfig) -> VRN:
    """A randomly initialised network of a registered variant (or an explicit config)."""
    if isinstance(variant, VRNConfig):
        return VRN(variant)
    if variant not in VARIANTS:
        raise KeyError(f"unknown model variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VRN(VARIANTS[variant])


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(
    path: str | Path, model: VRN, variant: str, meta: dict | None = None, half: bool = True
) -> None:
    """Save weights (fp16 by default) with the config that rebuilds the network."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v)
        for k, v in model.state_dict().items()
    }
    torch.save(
        {"variant": variant, "config": model.config.to_dict(), "state_dict": state,
         "meta": meta or {}},
        path,
    )  # fmt: skip


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[VRN, dict]:
    """Rebuild a network from a checkpoint; returns (model in eval mode, checkpoint info)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = VRN(VRNConfig(**checkpoint["config"]))
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in checkpoint["state_dict"].items()}  # fmt: skip
    model.load_state_dict(state)
    info = {
        "variant": checkpoint["variant"],
        "config": checkpoint["config"],
        "meta": checkpoint.get("meta", {}),
        "sha256": file_sha256(path),
    }
    return model.to(device).eval(), info


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = [
    "VARIANTS", "VRN", "VRNConfig", "count_parameters", "create_model", "file_sha256",
    "fold_batchnorm", "load_checkpoint", "save_checkpoint",
]  # fmt: skip
