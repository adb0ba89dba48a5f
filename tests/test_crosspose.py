"""bench.crosspose metrics on score sets with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from bench.crosspose import (
    ARMS,
    PLOTTED,
    REGISTERED_ARMS,
    DlibRecogniser,
    Photo,
    arms_run,
    bootstrap,
    bucket_of,
    equal_error_rate,
    evaluate,
    markdown_table,
    rank1,
    score_matrices,
    seconds_per_photo,
    tar_at_far,
    verification,
)


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


# ---- the arms, on synthetic embeddings ------------------------------------------------------
# Person p's embedding is e_p (one-hot); w_p = e_(p+1) is a wrong one. Each arm reads its own
# embeddings, set right or wrong so that its rank-1 says which it read: a probe at yaw 40 must
# use the gallery's renders at the 15° grid yaw 45, not 30.

PEOPLE = 6


def _photos(registered: bool = True) -> tuple[list[Photo], list[Photo]]:
    eye = np.eye(PEOPLE, dtype=np.float32)
    right, wrong = eye, np.roll(eye, 1, axis=1)
    gallery, probes = [], []
    for p in range(PEOPLE):
        gallery.append(Photo(p, "frontal/01.jpg", found=True, yaw=0.0, raw=right[p],
                             at_yaw={30.0: wrong[p], 45.0: right[p]}))  # fmt: skip
        probe = Photo(p, "profile/01.jpg", found=True, yaw=40.0, raw=right[p], frontal=wrong[p],
                      geometry_aligned=right[p])  # fmt: skip
        if registered:
            gallery[-1].registered_at_yaw = {30.0: right[p], 45.0: wrong[p]}
            probe.registered_frontal = right[p]
        probes.append(probe)
    return probes, gallery


def test_arms_keep_their_order_and_the_registered_ones_come_last():
    assert ARMS[:5] == ("raw", "frontalised", "pose_matched", "fusion", "raw_geometry_aligned")
    assert ARMS[5:] == REGISTERED_ARMS == ("registered_pose_matched", "registered_frontalised")
    assert arms_run(True) == ARMS
    assert arms_run(False) == ARMS[:5]
    assert "raw_geometry_aligned" not in PLOTTED and set(REGISTERED_ARMS) <= set(PLOTTED)


def test_score_matrices_read_each_arms_own_embeddings():
    probes, gallery = _photos()
    people = list(range(PEOPLE))
    matrices = score_matrices(probes, gallery, people, DlibRecogniser)
    assert tuple(matrices) == ARMS
    truth = np.arange(PEOPLE)
    expected = {
        "raw": 1.0,
        "frontalised": 0.0,
        "pose_matched": 1.0,  # the gallery at 45° (right), not at 30° (wrong)
        "raw_geometry_aligned": 1.0,
        "registered_pose_matched": 0.0,  # registered renders at 45° are the wrong ones
        "registered_frontalised": 1.0,  # the registered frontal, not the volume's
    }
    for arm, value in expected.items():
        assert rank1(matrices[arm], truth) == value, arm
    fused = (matrices["raw"] + matrices["frontalised"] + matrices["pose_matched"]) / 3.0
    np.testing.assert_allclose(matrices["fusion"], fused)  # the registered arms stay out


def test_evaluate_reports_the_registered_arms():
    probes, gallery = _photos()
    report = evaluate(probes, gallery, list(range(PEOPLE)), DlibRecogniser, rounds=20)
    entry = report["30-60"]
    assert entry["probes"] == PEOPLE
    assert set(ARMS) <= set(entry)
    assert entry["registered_frontalised"]["rank1"]["value"] == 1.0
    assert entry["registered_frontalised"]["tar_at_far_0.01"]["value"] == 1.0
    assert entry["registered_pose_matched"]["rank1"]["value"] == 0.0
    table = markdown_table({"buckets": {"30-60": entry}})
    assert "| registered_pose_matched |" in table and "| registered_frontalised |" in table


def test_without_the_face_model_the_old_arms_still_run():
    probes, gallery = _photos(registered=False)
    people = list(range(PEOPLE))
    with pytest.raises(ValueError, match="registered"):
        score_matrices(probes, gallery, people, DlibRecogniser)
    report = evaluate(probes, gallery, people, DlibRecogniser, rounds=5, arms=arms_run(False))
    entry = report["30-60"]
    assert set(ARMS[:5]) <= set(entry)
    assert not set(REGISTERED_ARMS) & set(entry)
    assert entry["pose_matched"]["rank1"]["value"] == 1.0


def test_plot_draws_the_arms_a_run_made(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.crosspose import plot

    for registered in (True, False):
        probes, gallery = _photos(registered)
        people = list(range(PEOPLE))
        report = evaluate(probes, gallery, people, DlibRecogniser, 5, arms_run(registered))
        path = tmp_path / f"plot_{registered}.png"
        plot(report, "synthetic", path)
        assert path.stat().st_size > 0


def test_seconds_per_photo_splits_off_the_registered_arms():
    probes, gallery = _photos()
    for photo, (total, registered) in zip(probes, [(3.0, 1.0), (5.0, 2.0)], strict=False):
        photo.seconds, photo.registered_seconds = total, registered
    out = seconds_per_photo(probes, gallery)
    assert out["probe"] == {"photos": 2, "all_arms": 4.0, "registered_arms": 1.5,
                            "other_arms": 2.5}  # fmt: skip
    assert out["gallery"]["photos"] == 0 and out["gallery"]["all_arms"] is None
