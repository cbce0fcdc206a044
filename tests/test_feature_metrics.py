"""Precision/recall (Kynkäänniemi et al. 2019), KID and feature diversity against cases worked out by hand."""

import numpy as np
import pytest

from pop_tf.metrics import feature_diversity, kid, precision_recall


def test_knn_radii_exclude_the_sample_itself_and_keep_duplicates():
    # 1-D points 0, 1, 2, 3, 10: the 3rd nearest other point of each.
    radii = precision_recall.knn_radii(np.array([[0.0], [1.0], [2.0], [3.0], [10.0]]), k=3)
    np.testing.assert_allclose(radii, [3.0, 2.0, 2.0, 3.0, 9.0])
    # A duplicate is a neighbour at distance 0, the sample itself is not.
    np.testing.assert_allclose(precision_recall.knn_radii(np.array([[0.0], [0.0], [5.0]]), k=1), [0.0, 0.0, 5.0])


def test_precision_and_recall_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])  # k=3 radii 3, 2, 2, 3, 9
    generated = np.array([[-4.0], [5.0], [20.0], [30.0]])  # k=3 radii 34, 25, 24, 34
    result = precision_recall.precision_recall(real, generated, k=3)
    # Only 5 lies in a real ball (|5 − 3| = 2 ≤ 3); -4 is 4 from 0 (radius 3) and 14 from 10 (radius 9).
    assert result["precision"] == 0.25
    # The generated balls are huge (radius 34 around -4): every real point is covered.
    assert result["recall"] == 1.0
    assert (result["k"], result["num_real"], result["num_generated"]) == (3, 5, 4)


def test_a_point_on_a_ball_boundary_counts_as_inside():
    real = np.array([[0.0, 0.0], [2.0, 0.0]])  # k=1 radius 2 each
    inside = precision_recall.coverage(real, precision_recall.knn_radii(real, k=1), np.array([[4.0, 0.0], [4.1, 0.0]]))
    assert inside.tolist() == [True, False]


def test_precision_recall_refuses_too_few_samples():
    with pytest.raises(ValueError, match="more than 3 samples"):
        precision_recall.precision_recall(np.zeros([3, 2]), np.zeros([5, 2]))


def test_kid_by_hand():
    x, y = np.zeros([2, 1]), np.ones([2, 1])
    # k(x, x') = 1, k(y, y') = (1 + 1)^3 = 8, k(x, y) = 1: MMD² = 1 + 8 − 2·1 = 7 (diagonals left out).
    assert kid.polynomial_mmd(x, y) == pytest.approx(7.0)
    result = kid.kid(x, y, subset_size=10)
    assert result["mean"] == pytest.approx(7.0) and result["std"] == 0.0 and result["subset_size"] == 2


def test_kid_of_two_samples_of_one_distribution_is_near_zero():
    rng = np.random.default_rng(0)
    same = kid.kid(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), num_subsets=20, subset_size=200)
    shifted = kid.kid(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 1.0, num_subsets=20, subset_size=200)
    assert abs(same["mean"]) < 0.05 < shifted["mean"]


def test_feature_diversity_by_hand():
    # One input, two samples at a right angle: distance √2 after normalisation; a third scaled copy adds 0.
    result = feature_diversity.diversity(np.array([[[1.0, 0.0], [0.0, 3.0], [2.0, 0.0]]]))
    assert result["mean"] == pytest.approx((np.sqrt(2) + 0.0 + np.sqrt(2)) / 3)
    assert result["num_pairs"] == 3 and result["stderr"] is None
    same = feature_diversity.diversity(np.ones([4, 5, 3]))
    assert same["mean"] == 0.0 and same["stderr"] == 0.0
    real = feature_diversity.real_pairs_distance(np.array([[1.0, 0.0], [5.0, 0.0], [3.0, 0.0], [0.0, 2.0], [9.0, 9.0]]))
    assert real["mean"] == pytest.approx(np.sqrt(2) / 2) and real["num_pairs"] == 2
