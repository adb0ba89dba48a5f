"""bench.crosspose metrics on score sets with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from bench.crosspose import bootstrap, bucket_of, equal_error_rate, rank1, tar_at_far, verification


def test_tar_at_far_on_a_known_grid():
    impostor = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    genuine = np.array([0.9885, 0.9995, 0.5, 0.995])
    # FAR 1 %: 10 impostors may pass -> threshold 0.989; genuine above it: 0.9995, 0.995
    assert tar_at_far(genuine, impostor, 0.01) == 0.5
    # FAR 0.1 %: 1 impostor may pass -> threshold 0.998: only 0.9995
    assert tar_at_far(genuine, impostor, 0.001) == 0.25
    # fewer impostors than 1 / FAR: no impostor may pass
    assert tar_at_far(np.array([2.0, 0.5]), np.array([1.0, 0.0]), 0.01) == 0.5


def test_tar_and_eer_of_separable_scores():
    genuine, impostor = np.linspace(2, 3, 50), np.linspace(0, 1, 500)
    assert tar_at_far(genuine, impostor, 0.001) == 1.0
    assert equal_error_rate(genuine, impostor) == 0.0


def test_eer_of_two_gaussians():
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(1, 1, 200_000), rng.normal(-1, 1, 200_000)
    assert equal_error_rate(genuine, impostor) == pytest.approx(0.1587, abs=0.003)  # Phi(-1)


def test_rank1_and_verification():
    scores = np.array([[0.9, 0.1, 0.2], [0.3, 0.2, 0.8], [0.1, 0.7, 0.3], [0.5, 0.4, 0.6]])
    truth = np.array([0, 2, 1, 0])
    assert rank1(scores, truth) == 0.75
    out = verification(scores, truth)
    assert out["rank1"] == 0.75
    assert set(out) == {"tar_at_far_0.01", "tar_at_far_0.001", "eer", "rank1"}


def test_bootstrap_intervals():
    rng = np.random.default_rng(3)
    people = np.repeat(np.arange(100), 4)
    values = rng.normal(0.0, 1.0, 100)[people]  # one value per person, shared by its rows

    def mean(rows):
        return {"mean": float(values[rows].mean()), "one": 1.0}

    ci = bootstrap(mean, people, rounds=400, seed=1)
    lo, hi = ci["mean"]
    # the standard error of a mean of 100 people's values is ~0.1: the 95 % interval
    # spans about ±0.2 around the sample mean
    assert lo < values.mean() < hi
    assert 0.25 < hi - lo < 0.55
    assert ci["one"] == (1.0, 1.0)


def test_buckets():
    assert [bucket_of(y) for y in (0, -29.9, 30, -59, 60, 89, -95)] == [0, 0, 1, 1, 2, 2, 2]
