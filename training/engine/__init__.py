"""The synthetic data engine: `SyntheticFaces(...).batch(index, size)` -> `Batch`."""

from training.engine.synth import Batch, EngineConfig, SyntheticFaces

__all__ = ["Batch", "EngineConfig", "SyntheticFaces"]
