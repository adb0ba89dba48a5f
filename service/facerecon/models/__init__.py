"""Networks registered by name, and checkpoints that carry their own constructor arguments."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from facerecon.models.volume_pose import VolumePose, VolumePoseConfig
from facerecon.models.vrn import VRN, VRNConfig, fold_batchnorm

VARIANTS: dict[str, VRNConfig | VolumePoseConfig] = {
    "vrn": VRNConfig(features=256, modules=3),  # the paper: ~18.5M parameters
    "vrn-light": VRNConfig(features=128, modules=4),  # ~6.2M parameters
    # vrn-light with a 68-landmark heatmap head beside the volume (VRN-Multitask's idea)
    "vrn-light-landmarks": VRNConfig(features=128, modules=4, landmarks=68),
    "vrn-tiny": VRNConfig(features=16, modules=1),  # for tests only
    "vrn-tiny-landmarks": VRNConfig(features=16, modules=1, landmarks=68),  # tests only
    "volume-pose": VolumePoseConfig(),  # head pose from a VRN volume: ~0.37M parameters
}
# architecture name (stored in checkpoints) -> (network, its config)
ARCHITECTURES: dict[str, tuple[type[torch.nn.Module], type]] = {
    "vrn": (VRN, VRNConfig),
    "volume-pose": (VolumePose, VolumePoseConfig),
}


def create_model(variant: str | VRNConfig | VolumePoseConfig) -> VRN | VolumePose:
    """A randomly initialised network of a registered variant (or an explicit config)."""
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise KeyError(f"unknown model variant {variant!r}; known: {', '.join(VARIANTS)}")
        variant = VARIANTS[variant]
    network = next(net for net, config in ARCHITECTURES.values() if isinstance(variant, config))
    return network(variant)


def architecture_of(model: torch.nn.Module) -> str:
    return next(name for name, (net, _) in ARCHITECTURES.items() if isinstance(model, net))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(
    path: str | Path,
    model: VRN | VolumePose,
    variant: str,
    meta: dict | None = None,
    half: bool = True,
) -> None:
    """Save weights (fp16 by default) with the config that rebuilds the network."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v)
        for k, v in model.state_dict().items()
    }
    torch.save(
        {"variant": variant, "architecture": architecture_of(model),
         "config": model.config.to_dict(), "state_dict": state, "meta": meta or {}},
        path,
    )  # fmt: skip


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[VRN | VolumePose, dict]:
    """Rebuild a network from a checkpoint; returns (model in eval mode, checkpoint info)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    architecture = checkpoint.get("architecture", "vrn")  # older checkpoints: all VRNs
    network, config = ARCHITECTURES[architecture]
    model = network(config(**checkpoint["config"]))
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in checkpoint["state_dict"].items()}  # fmt: skip
    model.load_state_dict(state)
    info = {
        "variant": checkpoint["variant"],
        "architecture": architecture,
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
    "ARCHITECTURES", "VARIANTS", "VRN", "VRNConfig", "VolumePose", "VolumePoseConfig",
    "architecture_of", "count_parameters", "create_model", "file_sha256",
    "fold_batchnorm", "load_checkpoint", "save_checkpoint",
]  # fmt: skip
