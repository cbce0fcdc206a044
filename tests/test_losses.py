"""Tests of pop_tf.losses against values worked out by hand (and numpy where the arrays are big)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from pop_tf import losses as L


def _value(tensor):
    return float(np.asarray(tensor))


def _a(*values):
    # A list or tuple means "one entry per scale"; one scale is an array.
    return np.array(values)


# --- adversarial --------------------------------------------------------------------------------


def test_hinge_discriminator_loss_by_hand():
    real = _a(0.5, 2.0, -1.0)  # relu(1 - r) = 0.5, 0, 2   -> mean 5/6
    fake = _a(0.0, -2.0, 1.0)  # relu(1 + f) = 1, 0, 2     -> mean 1
    assert _value(L.hinge_discriminator_loss(real, fake)) == pytest.approx(5 / 6 + 1)


def test_hinge_discriminator_loss_averages_extra_fake_sets_like_dmit():
    real, fake, wrong_label = _a(0.5, 2.0, -1.0), _a(0.0, -2.0, 1.0), _a(-0.5, -0.5)
    # DMIT: relu(1-D(x,c_src)) + 0.5 relu(1+D(x,c_tgt)) + 0.5 relu(1+D(G,c_tgt)); wrong: 0.5
    value = L.hinge_discriminator_loss(real, fake, extra_fake_logits=[wrong_label])
    assert _value(value) == pytest.approx(5 / 6 + 0.5 * 1 + 0.5 * 0.5)


def test_hinge_losses_sum_over_scales():
    real = [np.array([[2.0]]), np.array([0.0, 0.0])]  # scale terms 0 and 1
    fake = [np.array([[0.0]]), np.array([-1.0, 1.0])]  # scale terms 1 and 1
    assert _value(L.hinge_discriminator_loss(real, fake)) == pytest.approx(0 + 1 + 1 + 1)
    assert _value(L.hinge_generator_loss([[1.0, 2.0, 3.0], [4.0]])) == pytest.approx(-6.0)
    assert _value(L.hinge_generator_loss(_a(1.0, 2.0, 3.0))) == pytest.approx(-2.0)


def test_least_squares_losses_by_hand():
    real = _a(1.0, 0.0, 2.0)  # (r-1)^2 = 0, 1, 1 -> 2/3
    fake = _a(0.0, 1.0, -2.0)  # f^2 = 0, 1, 4     -> 5/3
    assert _value(L.least_squares_discriminator_loss(real, fake)) == pytest.approx(7 / 3)
    extra = [_a(1.0)]  # one extra fake set: 1 -> fake side (5/3 + 1) / 2
    assert _value(L.least_squares_discriminator_loss(real, fake, extra)) == pytest.approx(
        2 / 3 + (5 / 3 + 1) / 2)
    assert _value(L.least_squares_generator_loss(_a(1.0, 0.0, 3.0))) == pytest.approx(5 / 3)
    assert _value(L.least_squares_generator_loss([[1.0], [0.0, 2.0]])) == pytest.approx(0 + 1)


def test_mismatched_scales_are_rejected():
    with pytest.raises(ValueError, match="fake_logits has 1 scales"):
        L.hinge_discriminator_loss([_a(1.0), _a(2.0)], _a(1.0))
    with pytest.raises(ValueError, match=r"extra_fake_logits\[0\]"):
        L.least_squares_discriminator_loss([_a(1.0), _a(2.0)], [_a(1.0), _a(2.0)], [_a(1.0)])
    with pytest.raises(ValueError, match="real_logits"):
        L.least_squares_discriminator_loss([], _a(1.0))


# --- reconstruction and latent ------------------------------------------------------------------


def test_kl_divergence_is_summed_like_dmit():
    mu = np.array([[1.0, 0.0]])
    logvar = np.array([[0.0, math.log(2.0)]])
    # elements 1+lv-mu^2-e^lv: -1 and ln2 - 1; times -1/2
    one = 1.0 - math.log(2.0) / 2.0
    assert _value(L.kl_divergence_loss(mu, logvar)) == pytest.approx(one)
    # A sum: doubling the batch doubles it.
    assert _value(L.kl_divergence_loss(np.tile(mu, (2, 1)), np.tile(logvar, (2, 1)))) == (
        pytest.approx(2 * one))
    assert _value(L.kl_divergence_loss(np.zeros((3, 8)), np.zeros((3, 8)))) == 0.0


def test_l1_reconstruction_loss_by_hand():
    assert _value(L.l1_reconstruction_loss([[1.0, 2.0]], [[2.0, 0.0]])) == pytest.approx(1.5)


# --- diversity ----------------------------------------------------------------------------------


def test_mode_seeking_loss_by_hand():
    images_1 = np.zeros((1, 2, 2, 1))
    images_2 = np.full((1, 2, 2, 1), 0.5)  # mean |dG| = 0.5
    z_1, z_2 = np.array([[0.0, 0.0]]), np.array([[1.0, 3.0]])  # mean |dz| = 2
    assert _value(L.mode_seeking_loss(images_1, images_2, z_1, z_2)) == pytest.approx(
        1.0 / (0.25 + 1e-5), rel=1e-6)
    # Identical outputs: 1 / eps, not infinity.
    assert _value(L.mode_seeking_loss(images_1, images_1, z_1, z_2)) == pytest.approx(1e5)


def test_dmit_diversity_loss_puts_eps_on_the_image_distance():
    images_1 = np.zeros((1, 2, 2, 1))
    images_2 = np.full((1, 2, 2, 1), 0.5)
    z_1, z_2 = np.array([[0.0, 0.0]]), np.array([[1.0, 3.0]])
    assert _value(L.dmit_diversity_loss(images_1, images_2, z_1, z_2)) == pytest.approx(
        2.0 / (0.5 + 1e-5), rel=1e-6)
    assert _value(L.dmit_diversity_loss(images_1, images_1, z_1, z_2)) == pytest.approx(2e5)


def test_cluster_mean_loss_by_hand_with_ids_or_gathered_means():
    features = np.array([[1.0, 2.0], [3.0, 4.0]])
    table = np.array([[0.0, 0.0], [1.0, 1.0]])
    # sample 0 -> cluster 1: |0| + |1| = 1; sample 1 -> cluster 0: |3| + |4| = 7 -> batch mean 4
    assert _value(L.cluster_mean_loss(features, table, cluster_ids=[1, 0])) == pytest.approx(4.0)
    gathered = table[[1, 0]]
    assert _value(L.cluster_mean_loss(features, gathered)) == pytest.approx(4.0)


def test_cluster_mean_loss_is_the_l1_norm_summed_over_the_feature_dimensions():
    """Paper's |μ_i − E(G(z, i))|: Σ over the 49 dims, not a mean (which would be 49× smaller)."""
    features = np.full((3, 49), 0.5)
    means = np.zeros((3, 49))
    means[1] = 1.5  # |0.5 − 1.5| = 1 in every dim
    # per sample: 49·0.5, 49·1, 49·0.5 -> batch mean 49·2/3
    assert _value(L.cluster_mean_loss(features, means)) == pytest.approx(49 * 2 / 3)
    # Moving one dim 1 further from the mean adds 1, whatever D is: λ_d is not divided by D.
    shifted = features[:1].copy()
    shifted[0, 7] += 1.0
    assert _value(L.cluster_mean_loss(shifted, means[:1])) == pytest.approx(24.5 + 1.0)


def test_cluster_mean_loss_sample_weight_is_a_weighted_mean_of_the_per_sample_norms():
    features = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, -1.0]])
    table = np.array([[0.0, 0.0], [1.0, 1.0]])
    ids = [1, 0, 0]  # per-sample norms 1, 7, 1
    assert _value(L.cluster_mean_loss(features, table, ids, sample_weight=[1, 0, 1])) == pytest.approx(1.0)
    assert _value(L.cluster_mean_loss(features, table, ids, sample_weight=[0, 1, 0])) == pytest.approx(7.0)
    assert _value(L.cluster_mean_loss(features, table, ids, sample_weight=[1, 2, 1])) == pytest.approx(16 / 4)
    assert _value(L.cluster_mean_loss(features, table, ids)) == pytest.approx(9 / 3)
    assert _value(L.cluster_mean_loss(features, table, ids, sample_weight=[0, 0, 0])) == 0.0
    # A left-out sample gets no gradient; the others get sign(f − μ) / Σ weights per dim.
    variable = tf.Variable(features, dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = L.cluster_mean_loss(variable, table, ids, sample_weight=[1, 0, 1])
    np.testing.assert_allclose(np.asarray(tape.gradient(loss, variable)),
                               [[0.0, 0.5], [0.0, 0.0], [0.0, -0.5]])


def test_mahalanobis_loss_by_hand():
    features = np.array([[1.0, 2.0]])
    means = np.array([[0.0, 0.0]])
    precision = np.array([[[2.0, 0.0], [0.0, 0.5]]])
    full = np.array([[1.0, 1.0]])
    first_only = np.array([[1.0, 0.0]])
    # d^2 = 2*1 + 0.5*4 = 4
    assert _value(L.mahalanobis_loss(features, means, precision, full)) == pytest.approx(2.0)
    assert _value(L.mahalanobis_loss(features, means, precision, full, squared=True)) == (
        pytest.approx(4.0))
    # Only the first feature: d^2 = 2, whatever the padding of the unselected row/column holds.
    messy = np.array([[[2.0, 7.0], [7.0, 9.0]]])
    assert _value(L.mahalanobis_loss(features, means, messy, first_only)) == pytest.approx(
        math.sqrt(2.0))
    assert _value(L.mahalanobis_loss(features, means, messy, first_only.astype(bool))) == (
        pytest.approx(math.sqrt(2.0)))


def _random_cluster_statistics(rng, k=3, d=49):
    covariances = []
    for _ in range(k):
        a = rng.normal(size=(d, 2 * d))
        covariances.append(a @ a.T / (2 * d))
    masks = np.zeros((k, d), bool)
    masks[0] = True  # big cluster: every feature
    masks[1, :10] = True  # a 11-member cluster keeps n - 1 = 10 features
    masks[2, rng.permutation(d)[:30]] = True
    return np.stack(covariances), masks, rng.normal(size=(k, d))


def test_mahalanobis_with_masks_equals_numpy_on_the_selected_sub_vectors():
    rng = np.random.default_rng(0)
    covariances, masks, means = _random_cluster_statistics(rng)
    precision = np.asarray(L.masked_inverse_covariances(covariances, masks))
    ids = np.array([0, 1, 2, 1, 2, 0])
    features = rng.normal(size=(len(ids), 49))
    expected = []
    for f, i in zip(features, ids):
        sel = masks[i]
        delta = f[sel] - means[i][sel]
        expected.append(math.sqrt(delta @ np.linalg.inv(covariances[i][np.ix_(sel, sel)]) @ delta))
    value = L.mahalanobis_loss(features, means, precision, masks, cluster_ids=ids)
    assert _value(value) == pytest.approx(np.mean(expected), rel=1e-4)
    # The per-sample (already gathered) layout gives the same number.
    gathered = L.mahalanobis_loss(features, means[ids], precision[ids], masks[ids])
    assert _value(gathered) == pytest.approx(np.mean(expected), rel=1e-4)


def test_masked_inverse_covariances_layout():
    rng = np.random.default_rng(1)
    covariances, masks, _ = _random_cluster_statistics(rng, k=3, d=12)
    ridge = 0.1
    precision = np.asarray(L.masked_inverse_covariances(covariances, masks, ridge=ridge))
    assert precision.shape == (3, 12, 12)
    for i in range(3):
        sel = masks[i]
        block = covariances[i][np.ix_(sel, sel)] + ridge * np.eye(sel.sum())
        np.testing.assert_allclose(precision[i][np.ix_(sel, sel)], np.linalg.inv(block),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(precision[i][~sel], 0.0)
        np.testing.assert_array_equal(precision[i][:, ~sel], 0.0)


def test_mahalanobis_gradient_is_finite_at_the_mean():
    features = tf.Variable([[1.0, 2.0]])
    with tf.GradientTape() as tape:
        loss = L.mahalanobis_loss(features, [[1.0, 2.0]], [[[1.0, 0.0], [0.0, 1.0]]], [[1, 1]])
    gradient = tape.gradient(loss, features)
    assert np.all(np.isfinite(np.asarray(gradient)))


def test_losses_are_differentiable_scalars():
    images_1 = tf.Variable(np.random.default_rng(2).normal(size=(2, 4, 4, 3)), dtype=tf.float32)
    images_2 = tf.constant(np.random.default_rng(3).normal(size=(2, 4, 4, 3)), tf.float32)
    z_1, z_2 = tf.zeros((2, 8)), tf.ones((2, 8))
    with tf.GradientTape(persistent=True) as tape:
        terms = {
            "ms": L.mode_seeking_loss(images_1, images_2, z_1, z_2),
            "dmit": L.dmit_diversity_loss(images_1, images_2, z_1, z_2),
            "l1": L.l1_reconstruction_loss(images_1, images_2),
            "hinge_g": L.hinge_generator_loss([images_1, images_1[:, :2]]),
            "ls_g": L.least_squares_generator_loss(images_1),
        }
    for name, value in terms.items():
        assert value.shape == () and value.dtype == tf.float32, name
        gradient = tape.gradient(value, images_1)
        assert gradient is not None and np.abs(np.asarray(gradient)).sum() > 0, name
