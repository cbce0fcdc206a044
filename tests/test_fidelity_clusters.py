"""Paper fidelity of the clusterer's n−1 rule and of L_d (Suzuki, Sakaue, Sato, VISAPP 2022, §3).

Hand-built 49-d features in three far-apart clusters of 5, 12 and 30 members. The smallest
cluster varies most in four known dimensions, the others in other dimensions, and the
training set as a whole in still others (the centre offsets), so only the paper's rule — n from
the smallest cluster, that cluster's top n − 1 = 4 features by variance, for EVERY cluster —
selects exactly those four.
"""

import numpy as np
import pytest

from pop_tf import losses as L
from pop_tf.models.clusterer import fit_clusters, mahalanobis

D = 49
SMALLEST_TOP = [3, 17, 29, 41]  # where the 5-member cluster varies most
SIZES = (30, 12, 5)  # canonical numbering: largest first


def _features():
    rng = np.random.default_rng(0)
    parts = []
    for index, size in enumerate(SIZES):
        scale = np.full(D, 0.1)
        if size == 5:
            scale[SMALLEST_TOP] = [5.0, 4.0, 6.0, 3.0]
        else:
            scale[SMALLEST_TOP] = 2.0  # some spread on the shared features too
            scale[[10 + index, 20 + index, 30 + index, 44 + index]] = 8.0  # their own largest
        centre = np.zeros(D)
        centre[index] = 200.0  # the training-set variance is largest in dims 0, 1, 2
        parts.append(centre + rng.normal(size=(size, D)) * scale)
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def fitted():
    features = _features()
    # A tiny ridge, so the identities below hold to 1e-6 (the default's effect is checked apart).
    return features, fit_clusters(features, 3, seed=0, covariance_epsilon=1e-12)


def test_every_cluster_uses_the_smallest_clusters_top_n_minus_1_features(fitted):
    features, stats = fitted
    assert stats.sizes.tolist() == list(SIZES)
    # Hand check of the ranking: the 5 members' own variances, largest four.
    members = features[30 + 12:]
    assert np.sort(np.argsort(-members.var(axis=0))[:4]).tolist() == SMALLEST_TOP
    assert np.sort(np.argsort(-features.var(axis=0))[:4]).tolist() != SMALLEST_TOP
    for mask in stats.masks:
        assert np.flatnonzero(mask).tolist() == SMALLEST_TOP
    assert stats.selected_from == 2 and stats.summary()["selected_features"] == SMALLEST_TOP
    assert stats.summary()["kept_features"] == [4, 4, 4]
    for i in range(3):
        outside = ~stats.masks[i]
        assert not stats.inverse_covariances[i][outside].any()
        assert not stats.inverse_covariances[i][:, outside].any()


def test_mahalanobis_dimensionality_is_the_same_for_every_cluster(fitted):
    """Mean squared distance of a cluster's own members = (n − 1)/n · p for a p-d Σ (ddof=1).

    With the shared rule p = 4 everywhere: 3.2, 3.667, 3.867 for n = 5, 12, 30. The old
    per-cluster rule gave p = 4, 11, 29, i.e. 3.2, 10.08, 28.03: distances on different scales.
    """
    features, stats = fitted
    labels = np.repeat([0, 1, 2], SIZES)
    squared = mahalanobis(features, stats, labels)
    for i, n in enumerate(SIZES):
        assert squared[labels == i].mean() == pytest.approx((n - 1) / n * 4, rel=1e-6)
    # A deviation outside the shared features does not count, for any cluster.
    off = stats.means.copy()
    off[:, [0, 10, 20]] += 50.0
    np.testing.assert_allclose(mahalanobis(off, stats, [0, 1, 2]), 0.0, atol=1e-12)
    # The TF loss reads the same tables: its mean squared distance is the numpy one.
    value = L.mahalanobis_loss(features, stats.means, stats.inverse_covariances, stats.masks,
                               cluster_ids=labels, squared=True)
    assert float(value) == pytest.approx(squared.mean(), rel=1e-4)


def test_default_ridge_is_scaled_by_the_training_set_and_only_shortens_distances():
    features = _features()
    tiny = fit_clusters(features, 3, seed=0, covariance_epsilon=1e-12)
    default = fit_clusters(features, 3, seed=0)  # covariance_epsilon = 1e-3
    assert default.ridge == pytest.approx(1e-3 * features.var(axis=0).mean())
    np.testing.assert_array_equal(default.masks, tiny.masks)  # the ridge does not pick features
    labels = np.repeat([0, 1, 2], SIZES)
    ratio = np.sqrt(mahalanobis(features, default, labels) / mahalanobis(features, tiny, labels))
    # Here the centre offsets make the mean training variance ≈ 430 against within-cluster
    # variances of 4 to 36 on the shared features: ridge ≈ 0.43, distances 0–16% shorter.
    assert np.all(ratio <= 1.0) and np.all(ratio > 0.8)
    assert np.all(default.condition_numbers <= tiny.condition_numbers)


def test_cluster_mean_loss_on_49_dims_is_49_times_the_per_dimension_mean(fitted):
    """L_d is the paper's L1 norm: on the 49-d features it is D× the old per-dimension mean."""
    features, stats = fitted
    labels = np.repeat([0, 1, 2], SIZES)
    value = float(L.cluster_mean_loss(features, stats.means, labels))
    by_hand = np.abs(features - stats.means[labels]).sum(axis=1).mean()
    assert value == pytest.approx(by_hand, rel=1e-5)
    assert value == pytest.approx(D * np.abs(features - stats.means[labels]).mean(), rel=1e-5)
