"""Suzuki et al.'s cluster conditioning, shared by both generators' trainers and by evaluation's
pix2pix sampler: the cluster statistics a trainer checks and holds, and the test-time rule that
draws a cluster id with probability equal to its share of the training set.

The statistics come from the cluster stage (`clusters.npz`): per cluster the mean μ_i of the
feature extractor E's features, the inverse covariance Σ_i⁻¹ and the mask of the n−1 features
the Mahalanobis distance keeps. L_d and L_m themselves are pure losses (`pop_tf.losses`).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from pop_tf.models._checks import as_matrix


@dataclasses.dataclass(frozen=True)
class ClusterStatistics:
    """Checked cluster inputs of a trainer, as constants (None where `diversity` needs none)."""

    shares: tf.Tensor  # [K] float32, summing to 1
    means: tf.Tensor = None  # [K, D]
    inverse_covariances: tf.Tensor = None  # [K, D, D]
    feature_masks: tf.Tensor = None  # [K, D] of 0/1


def check_statistics(num_clusters, diversity, cluster_shares=None, feature_extractor=None,
                     cluster_means=None, inverse_covariances=None, feature_masks=None):
    """`ClusterStatistics` of a trainer's arguments; a ValueError names the argument that is wrong.

    Args:
        num_clusters: K (0 or 1 for an unconditioned generator: one uniform share).
        diversity: the trainer's diversity mode; "clusters" needs the extractor and statistics.
        cluster_shares: [K] non-negative numbers with a positive sum (uniform if omitted).
        feature_extractor: E; only checked for presence here (the trainer keeps it untracked).
        cluster_means, inverse_covariances, feature_masks: [K, D], [K, D, D], [K, D] (all ones
            if omitted).
    """
    k = max(num_clusters, 1)
    if cluster_shares is None:
        shares = np.full([k], 1.0 / k)
    else:
        shares = np.asarray(cluster_shares, dtype=np.float64)
        if shares.shape != (k,) or np.any(shares < 0) or shares.sum() <= 0:
            raise ValueError(
                f"cluster_shares must be {k} non-negative numbers with a positive sum, got "
                f"{cluster_shares!r}.")
        shares = shares / shares.sum()
    shares = tf.constant(shares, tf.float32)
    if diversity != "clusters":
        return ClusterStatistics(shares)
    if feature_extractor is None or cluster_means is None or inverse_covariances is None:
        raise ValueError("diversity='clusters' needs feature_extractor, cluster_means and inverse_covariances.")
    dim = np.asarray(cluster_means).shape[-1]
    masks = np.ones([k, dim]) if feature_masks is None else feature_masks
    return ClusterStatistics(
        shares,
        as_matrix(cluster_means, (k, dim), "cluster_means"),
        as_matrix(inverse_covariances, (k, dim, dim), "inverse_covariances"),
        as_matrix(np.asarray(masks, dtype=np.float32), (k, dim), "feature_masks"))


def draw_clusters(shares, num, seed, stream=0):
    """Cluster ids, each drawn with probability equal to its share (the paper's test-time rule).

    Args:
        shares: [K] cluster shares.
        num: how many ids (int or scalar tensor).
        seed: integer seed; the same seed (and stream) gives the same ids.
        stream: second word of the stateless seed, so that a caller's other draws from the same
            seed (noise, styles) stay independent of the ids.

    Returns:
        int32 tensor [num].
    """
    logits = tf.math.log(tf.cast(shares, tf.float32))[None, :]
    seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(stream, tf.int64)])
    return tf.random.stateless_categorical(logits, num, seed=seed, dtype=tf.int32)[0]
