"""Synthetic data engine, training and evaluation for facerecon's VRN."""
