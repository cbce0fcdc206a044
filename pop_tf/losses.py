"""Pure GAN loss functions for the translator (DMIT) and the diversity method (Suzuki et al.).

Every function takes tensors (or array-likes) and returns a scalar float32 tensor; none holds
state, reads a variable or draws a random number, so each can be unit-tested against a value
worked out by hand and reused by any trainer. The names follow TF-GAN's (`tfgan.losses`), which
does not import on TF 2.21.

Conventions:
- "Logits" are raw discriminator outputs (patch maps of any shape). A tensor or numpy array is
  one scale; a Python list or tuple ALWAYS means one entry per scale (so pass `np.array([...])`,
  not a bare list of numbers, for a single scale). The loss is the SUM over scales of the
  per-scale MEAN, as in both DMIT (`util/loss.py`) and BicycleGAN/MSGAN (`GANLoss`).
- Means are over the whole tensor (batch included), like PyTorch's `reduction="mean"`. Under a
  `tf.distribute` strategy the caller divides by the number of replicas (Keras leaves it to
  train_step): these functions do not know about replicas.
- Several "fake" sets (for example DMIT's real-image-with-wrong-label term) share the fake side
  of the discriminator loss: their terms are AVERAGED, so the real and fake sides keep equal
  weight. With one extra set this is DMIT's 1 + 0.5 + 0.5 weighting exactly.

References:
    Lim & Ye, "Geometric GAN", arXiv:1705.02894, 2017 (hinge loss).
    Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017 (LSGAN).
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (KL term).
    Yu et al., "Multi-mapping Image-to-Image Translation via Learning Disentanglement",
    NeurIPS 2019 (DMIT; its code: github.com/Xiaoming-Yu/DMIT).
    Mao, Lee, Tseng, Ma, Yang, "Mode Seeking Generative Adversarial Networks for Diverse Image
    Synthesis", CVPR 2019 (MSGAN; its code: github.com/HelenMao/MSGAN).
    Suzuki, Sakaue, Sato, "Diversifying Image Synthesis using Data Classification",
    VISAPP 2022 (cluster-mean and Mahalanobis losses).
"""

import tensorflow as tf


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _float(x):
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def _scales(logits, name):
    """Returns the logits as a non-empty list of float32 tensors, one per discriminator scale."""
    if isinstance(logits, (list, tuple)):
        if not logits:
            raise ValueError(f"{name} must hold at least one tensor, got an empty list.")
        return [_float(t) for t in logits]
    return [_float(logits)]


def _fake_sets(fake_logits, extra_fake_logits, num_scales):
    """The fake logits and every extra fake set, each as a list of `num_scales` tensors."""
    sets = [_scales(fake_logits, "fake_logits")]
    for index, extra in enumerate(extra_fake_logits or ()):
        sets.append(_scales(extra, f"extra_fake_logits[{index}]"))
    for index, fake_set in enumerate(sets):
        if len(fake_set) != num_scales:
            which = "fake_logits" if index == 0 else f"extra_fake_logits[{index - 1}]"
            raise ValueError(
                f"{which} has {len(fake_set)} scales but real_logits has {num_scales}; pass one "
                "tensor per discriminator scale in each.")
    return sets


def _weighted_mean(per_sample, sample_weight):
    """The mean of `per_sample` [N], or its `sample_weight`-weighted mean (0 when all weights are 0)."""
    if sample_weight is None:
        return tf.reduce_mean(per_sample)
    weight = _float(sample_weight)
    return tf.math.divide_no_nan(tf.reduce_sum(weight * per_sample), tf.reduce_sum(weight))


def _gather_rows(table, cluster_ids):
    """Per-sample rows of a per-cluster table, or the table itself when it is already per-sample."""
    table = _float(table)
    if cluster_ids is None:
        return table
    return tf.gather(table, tf.cast(cluster_ids, tf.int32))


# ---------------------------------------------------------------------------------------------
# Adversarial losses
# ---------------------------------------------------------------------------------------------


def hinge_discriminator_loss(real_logits, fake_logits, extra_fake_logits=None):
    """Hinge loss of a discriminator (DMIT's image GAN).

    L_D = Σ_scales [ mean relu(1 − D(real)) + (1/F) Σ_f mean relu(1 + D(fake_f)) ]

    where F is the number of fake sets (`fake_logits` plus each of `extra_fake_logits`).
    DMIT calls it with one extra set, the real image paired with a wrong (target) label, giving
    `relu(1−D(x,c_src)) + 0.5·relu(1+D(x,c_tgt)) + 0.5·relu(1+D(G(x),c_tgt))`.

    Args:
        real_logits: D's output on real data: a tensor, or a list with one tensor per scale.
        fake_logits: D's output on generated data, same structure as `real_logits`.
        extra_fake_logits: optional sequence of further fake sets, each with the structure of
            `real_logits`, that D must also push below −1.

    Returns:
        Scalar float32 loss.

    References:
        Lim & Ye 2017; DMIT `util/loss.py` (`hinge_dis`, `GANLoss.__call__`).
    """
    reals = _scales(real_logits, "real_logits")
    fake_sets = _fake_sets(fake_logits, extra_fake_logits, len(reals))
    total = 0.0
    for scale, real in enumerate(reals):
        fake_term = tf.add_n([tf.reduce_mean(tf.nn.relu(1.0 + s[scale])) for s in fake_sets])
        total += tf.reduce_mean(tf.nn.relu(1.0 - real)) + fake_term / len(fake_sets)
    return total


def hinge_generator_loss(fake_logits):
    """Hinge (non-saturating linear) generator loss: L_G = Σ_scales −mean D(fake).

    Args:
        fake_logits: D's output on generated data: a tensor or a list with one per scale.

    Returns:
        Scalar float32 loss.

    References:
        Lim & Ye 2017; DMIT `util/loss.py` (`hinge_gen`).
    """
    return tf.add_n([-tf.reduce_mean(t) for t in _scales(fake_logits, "fake_logits")])


def least_squares_discriminator_loss(real_logits, fake_logits, extra_fake_logits=None):
    """LSGAN discriminator loss with targets 1 (real) and 0 (fake).

    L_D = Σ_scales [ mean (D(real) − 1)² + (1/F) Σ_f mean D(fake_f)² ]

    No ½ factor (as in DMIT's content GAN and BicycleGAN/MSGAN's `GANLoss`; pix2pix halves the
    sum, which Adam's scale invariance makes immaterial).

    Args:
        real_logits: D's output on real data: a tensor, or a list with one tensor per scale.
        fake_logits: D's output on generated data, same structure as `real_logits`.
        extra_fake_logits: optional sequence of further fake sets (e.g. DMIT's content with the
            target label), each with the structure of `real_logits`.

    Returns:
        Scalar float32 loss.

    References:
        Mao et al. 2017; DMIT `util/loss.py`; MSGAN `Pix2Pix-Mode-Seeking` (`GANLoss(mse_loss)`).
    """
    reals = _scales(real_logits, "real_logits")
    fake_sets = _fake_sets(fake_logits, extra_fake_logits, len(reals))
    total = 0.0
    for scale, real in enumerate(reals):
        fake_term = tf.add_n([tf.reduce_mean(tf.square(s[scale])) for s in fake_sets])
        total += tf.reduce_mean(tf.square(real - 1.0)) + fake_term / len(fake_sets)
    return total


def least_squares_generator_loss(fake_logits):
    """LSGAN generator loss: L_G = Σ_scales mean (D(fake) − 1)².

    Args:
        fake_logits: D's output on generated data: a tensor or a list with one per scale.

    Returns:
        Scalar float32 loss.

    References:
        Mao et al. 2017; MSGAN `Pix2Pix-Mode-Seeking/models/pix2pix_model.py`.
    """
    return tf.add_n(
        [tf.reduce_mean(tf.square(t - 1.0)) for t in _scales(fake_logits, "fake_logits")])


# ---------------------------------------------------------------------------------------------
# Reconstruction and latent losses
# ---------------------------------------------------------------------------------------------


def kl_divergence_loss(mu, logvar):
    """KL(N(μ, e^logvar) ‖ N(0, I)) SUMMED over the batch and the latent dimensions, as DMIT does.

    L_KL = −½ Σ (1 + logvar − μ² − e^logvar)

    Because it is a sum, its size grows with the batch size: DMIT's weight λ_kl = 0.01 is tuned
    for its effective batch of 2 (one image per domain). Divide by the batch size yourself for a
    per-sample mean.

    Args:
        mu: posterior means, shape [N, n_style].
        logvar: posterior log-variances, same shape.

    Returns:
        Scalar float32 loss.

    References:
        Kingma & Welling 2014; DMIT `util/loss.py` (`get_kl_loss`).
    """
    mu, logvar = _float(mu), _float(logvar)
    return -0.5 * tf.reduce_sum(1.0 + logvar - tf.square(mu) - tf.exp(logvar))


def l1_reconstruction_loss(reconstructions, targets):
    """Mean absolute error over every element: L = mean |reconstructions − targets|.

    Args:
        reconstructions: generated tensor.
        targets: tensor of the same shape.

    Returns:
        Scalar float32 loss.

    References:
        Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks",
        CVPR 2017 (pix2pix L1 term); DMIT `--rec_mode l1` (PyTorch `nn.L1Loss`).
    """
    return tf.reduce_mean(tf.abs(_float(reconstructions) - _float(targets)))


# ---------------------------------------------------------------------------------------------
# Diversity losses
# ---------------------------------------------------------------------------------------------


def mode_seeking_loss(images_1, images_2, z_1, z_2, eps=1e-5):
    """MSGAN's mode-seeking loss: L_ms = 1 / (mean|G(z1) − G(z2)| / mean|z1 − z2| + eps).

    Means are over every element of the batch (not per sample), and eps sits after the ratio,
    exactly as in all of MSGAN's variants; minimising it pushes two outputs of the same condition
    apart in proportion to the distance between their latent codes. DMIT's form is different
    (see `dmit_diversity_loss`).

    Args:
        images_1: generated images for latent codes `z_1`, shape [N, H, W, C].
        images_2: generated images for `z_2`, same condition per row, same shape.
        z_1: latent codes, shape [N, nz].
        z_2: latent codes, shape [N, nz].
        eps: added to the ratio so that identical outputs give 1/eps instead of infinity.

    Returns:
        Scalar float32 loss.

    References:
        Mao et al., CVPR 2019, Eq. 3; MSGAN `Pix2Pix-Mode-Seeking/models/pix2pix_model.py`.
    """
    image_distance = tf.reduce_mean(tf.abs(_float(images_1) - _float(images_2)))
    latent_distance = tf.reduce_mean(tf.abs(_float(z_1) - _float(z_2)))
    return 1.0 / (image_distance / latent_distance + eps)


def dmit_diversity_loss(images_1, images_2, z_1, z_2, eps=1e-5):
    """DMIT's diversity regulariser: L_div = mean|z1 − z2| / (mean|G(z1) − G(z2)| + eps).

    MSGAN-like, but eps is added to the image distance rather than to the ratio (MSGAN:
    1/(ratio + eps)), and DMIT weighs it 0.05 instead of MSGAN's 1. The two agree up to O(eps).

    Args:
        images_1: generated images for latent codes `z_1`, shape [N, H, W, C].
        images_2: generated images for `z_2`, same shape.
        z_1: latent codes, shape [N, n_style].
        z_2: latent codes, same shape.
        eps: added to the image distance.

    Returns:
        Scalar float32 loss.

    References:
        Yu et al., NeurIPS 2019; DMIT `models/base_model.py` (`update_model`).
    """
    image_distance = tf.reduce_mean(tf.abs(_float(images_1) - _float(images_2)))
    latent_distance = tf.reduce_mean(tf.abs(_float(z_1) - _float(z_2)))
    return latent_distance / (image_distance + eps)


def cluster_mean_loss(features, cluster_means, cluster_ids=None, sample_weight=None):
    """Suzuki et al.'s L_d: the L1 distance of a generated image's feature to its cluster mean.

    L_d = mean_n Σ_j |μ_{i(n), j} − E(G(x_n, z_n, i(n)))_j|

    The paper's |μ_i − E(G(z, i))| is an L1 NORM: a SUM over the D feature dimensions (49 for
    the paper's 7×7 map), then a mean over the batch. An earlier version took the mean over the
    dimensions too (PyTorch's `nn.L1Loss`); that divided the effective λ_d by D (5/49 ≈ 0.1)
    while L_m, a norm, kept its full size, so the L_d : L_m balance was off by D = 49×. Summing
    keeps λ_d = 5 and λ_m = 0.2 in the paper's ratio. λ_d is applied by the caller.

    Args:
        features: E(G(·)), shape [N, D].
        cluster_means: the per-sample target means [N, D] when `cluster_ids` is None, else the
            per-cluster table [K, D] from which row `cluster_ids[n]` is taken for sample n.
        cluster_ids: optional int tensor [N] of cluster indices into `cluster_means`.
        sample_weight: optional [N] weights of the samples: the loss is the weighted mean of the
            per-sample norms (0 leaves a sample out; DMIT gives 0 to fakes in the edge domain,
            which the colour-image clusters do not describe; all zero gives 0).

    Returns:
        Scalar float32 loss.

    References:
        Suzuki, Sakaue, Sato, VISAPP 2022, Sec. 3 (L_d).
    """
    means = _gather_rows(cluster_means, cluster_ids)
    # Σ over the feature dimensions: the paper's L1 norm (see above), not nn.L1Loss's mean.
    per_sample = tf.reduce_sum(tf.abs(means - _float(features)), axis=-1)
    return _weighted_mean(per_sample, sample_weight)


def mahalanobis_loss(features, means, inverse_covariances, feature_masks, cluster_ids=None,
                     squared=False, epsilon=1e-8, sample_weight=None):
    """Suzuki et al.'s L_m: Mahalanobis distance of E(G(·, i)) to cluster i on the selected features.

    For sample n of cluster i with selected-feature mask m_i (the paper takes n from the
    SMALLEST cluster and keeps, for every cluster, the n − 1 features of largest variance in
    that cluster, so that every Σ_i is invertible and every distance has the same
    dimensionality; `pop_tf.models.clusterer.fit_clusters` builds such masks, all rows equal):

        d = m_i ⊙ (f_n − μ_i),   L_m = mean_n sqrt(dᵀ P_i d)

    where P_i is the [D, D] inverse covariance of the SELECTED features, embedded in the
    selected rows/columns (zeros elsewhere; `masked_inverse_covariances` builds it). Masking d
    makes every unselected coordinate drop out whatever the padding of P_i holds, so dᵀ P_i d
    equals the Mahalanobis form of the selected sub-vector, and the whole batch is one
    `einsum` without a Python loop over clusters.

    The distance (not its square) is used by default, as the paper names it; it is computed as
    sqrt(max(d², epsilon)) so that its gradient stays finite at the mean.

    Args:
        features: E(G(·)), shape [N, D].
        means: cluster means, [N, D] per sample, or [K, D] with `cluster_ids`.
        inverse_covariances: padded inverse covariances, [N, D, D] or [K, D, D].
        feature_masks: 0/1 or boolean selected-feature masks, [N, D] or [K, D].
        cluster_ids: optional int tensor [N]; when given, the three tables are per cluster and
            row `cluster_ids[n]` is used for sample n.
        squared: return the mean squared distance dᵀ P d instead of the distance.
        epsilon: floor of the squared distance under the square root.
        sample_weight: optional [N] weights of the samples (as in `cluster_mean_loss`).

    Returns:
        Scalar float32 loss.

    References:
        Suzuki, Sakaue, Sato, VISAPP 2022, Sec. 3 (L_m); Mahalanobis, "On the generalised
        distance in statistics", 1936.
    """
    features = _float(features)
    mu = _gather_rows(means, cluster_ids)
    precision = _gather_rows(inverse_covariances, cluster_ids)
    mask = _gather_rows(tf.cast(tf.convert_to_tensor(feature_masks), tf.float32), cluster_ids)
    delta = mask * (features - mu)
    squared_distance = tf.einsum("nd,nde,ne->n", delta, precision, delta)
    # Round-off (or a slightly indefinite precision matrix) can push the form below zero.
    squared_distance = tf.maximum(squared_distance, 0.0)
    if squared:
        return _weighted_mean(squared_distance, sample_weight)
    return _weighted_mean(tf.sqrt(tf.maximum(squared_distance, epsilon)), sample_weight)


def masked_inverse_covariances(covariances, feature_masks, ridge=0.0):
    """Per-cluster inverse covariances of the selected features, in `mahalanobis_loss`'s layout.

    For each cluster i with mask m_i, returns P_i = (Σ_i[S,S] + ridge·I)⁻¹ placed in rows and
    columns S = {j : m_ij = 1}, zeros elsewhere. Computed for all clusters at once: with
    M = diag(m_i), the matrix MΣM + ridge·M + (I − M) is block-diagonal (the selected block and
    an identity), so its inverse holds (Σ_SS + ridge·I)⁻¹ in the selected block, and M(·)M then
    clears the identity.

    Args:
        covariances: [K, D, D] full covariance matrices.
        feature_masks: [K, D] 0/1 or boolean masks of the selected features.
        ridge: added to the diagonal of each selected block before inversion (regularisation).

    Returns:
        float32 tensor [K, D, D].

    References:
        Suzuki, Sakaue, Sato, VISAPP 2022 (n−1 feature rule).
    """
    covariances = tf.cast(tf.convert_to_tensor(covariances), tf.float64)
    mask = tf.cast(tf.convert_to_tensor(feature_masks), tf.float64)
    if covariances.shape.rank != 3 or mask.shape.rank != 2:
        raise ValueError(
            f"covariances must be [K, D, D] and feature_masks [K, D], got shapes "
            f"{covariances.shape} and {mask.shape}.")
    outer = mask[:, :, None] * mask[:, None, :]
    dimension = tf.shape(mask)[-1]
    eye = tf.eye(dimension, dtype=tf.float64)[None]
    block = outer * covariances + ridge * tf.linalg.diag(mask) + eye * (1.0 - mask)[:, None, :]
    return tf.cast(outer * tf.linalg.inv(block), tf.float32)
