"""`pop_tf.models.cluster_conditioning`: the checks and the test-time draw both trainers share."""

import numpy as np
import pytest

from pop_tf.models import cluster_conditioning as cc


def test_shares_are_normalised_and_default_to_uniform():
    np.testing.assert_allclose(cc.check_statistics(3, "ms", [2, 1, 1]).shares.numpy(), [0.5, 0.25, 0.25])
    np.testing.assert_allclose(cc.check_statistics(4, "none").shares.numpy(), [0.25] * 4)
    # An unconditioned generator has one cluster.
    np.testing.assert_allclose(cc.check_statistics(0, "dmit").shares.numpy(), [1.0])
    for bad in ([1, 1], [1, -1, 1], [0, 0, 0]):
        with pytest.raises(ValueError, match="cluster_shares"):
            cc.check_statistics(3, "ms", bad)


def test_clusters_mode_checks_every_statistic_and_fills_the_masks():
    means, inverse = np.zeros((2, 3)), np.tile(np.eye(3), (2, 1, 1))
    with pytest.raises(ValueError, match="feature_extractor, cluster_means"):
        cc.check_statistics(2, "clusters", cluster_means=means, inverse_covariances=inverse)
    stats = cc.check_statistics(2, "clusters", feature_extractor=object(), cluster_means=means,
                                inverse_covariances=inverse)
    assert stats.feature_masks.numpy().tolist() == [[1.0] * 3] * 2
    with pytest.raises(ValueError, match="inverse_covariances must have shape"):
        cc.check_statistics(2, "clusters", feature_extractor=object(), cluster_means=means,
                            inverse_covariances=inverse[:, :2, :2])
    assert cc.check_statistics(2, "ms").means is None


def test_draws_follow_the_shares_and_are_deterministic_per_seed_and_stream():
    ids = cc.draw_clusters([0.7, 0.2, 0.1, 0.0], 20_000, seed=3).numpy()
    np.testing.assert_allclose(np.bincount(ids, minlength=4) / ids.size, [0.7, 0.2, 0.1, 0.0], atol=0.015)
    again = cc.draw_clusters([0.7, 0.2, 0.1, 0.0], 20_000, seed=3).numpy()
    np.testing.assert_array_equal(ids, again)
    other = cc.draw_clusters([0.7, 0.2, 0.1, 0.0], 20_000, seed=3, stream=7).numpy()
    assert (ids != other).mean() > 0.3
