"""Cluster-conditioned pix2pix with mode seeking: Suzuki et al.'s edges → colour garment GAN.

Three parts (Suzuki et al. 2022):
- `UNetGenerator`: pix2pix's U-Net with the noise z and the one-hot cluster id concatenated to
  the input of EVERY encoder layer (BicycleGAN's `G_Unet_add_all`, which MSGAN's pix2pix uses);
  its depth follows the image size down to a 1×1 bottleneck, so 32² and 256² both work.
- `MultiScaleDiscriminator`: BicycleGAN's `D_NLayersMulti` (conditional PatchGAN, 2 scales, the
  second on 3×3/2 average-pooled inputs) on concat(edge, image, tiled one-hot).
- `ClusterPix2Pix`: the trainer (a `keras.Model` with `train_step`), with
  `diversity = "none" | "ms" | "clusters"` for the rows of the paper's table (pix2pix-like,
  MSGAN, ours) on the same networks.

Faithful to MSGAN's `Pix2Pix-Mode-Seeking` where the paper is silent: LSGAN; λ_L1 = 10 on the
first fake only; two z's through G in one concatenated batch; the G loss sums the adversarial
term over both fakes; D sees the real pair twice and each fake once (2·real + fake1 + fake2);
G is updated before D, and both steps see the networks as they were at the start of the
iteration (the D step scores the fakes made before the G update). Deviations, each for a
reason: every conv is spectrally normalised and initialised N(0, 0.02) like DMIT's (MSGAN uses
xavier and no SN), the cluster one-hot joins z everywhere z goes, and the step counter that
gates the Mahalanobis loss counts iterations (the paper's "epoch 100 of 400" is
`warmup_epochs × steps_per_epoch`).

Determinism on CPU: the trainer's own draws (z, test-time cluster ids) are stateless and come
from its `seed` and the step counter (each replica takes its rows of the global batch's draw);
weight initialisation draws from Keras's
global seed, so call `keras.utils.set_random_seed(seed)` before building the networks.

References:
    Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with Conditional Adversarial
    Networks", CVPR 2017 (pix2pix).
    Zhu et al., "Toward Multimodal Image-to-Image Translation", NeurIPS 2017 (BicycleGAN).
    Mao et al., "Mode Seeking Generative Adversarial Networks for Diverse Image Synthesis",
    CVPR 2019 (MSGAN).
    Suzuki, Sakaue, Sato, "Diversifying Image Synthesis using Data Classification",
    VISAPP 2022.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from pop_tf import distribution
from pop_tf import losses as L
from pop_tf.layers import (
    UP_TYPES,
    ConvBlock,
    PaddedAveragePooling2D,
    SpatialBroadcastConcat,
    upsample,
)
from pop_tf.layers.spectral import spectral_mode
from pop_tf.models import cluster_conditioning
from pop_tf.models._checks import positive_int
from pop_tf.models._tracking import Untracked, tf_variables

PACKAGE = "pop_tf"
DIVERSITY_MODES = ("none", "ms", "clusters")
# BicycleGAN caps the channel multiplier of both networks at 8 (ngf*8, ndf*8).
MAX_FILTER_MULTIPLIER = 8


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class UNetGenerator(keras.Model):
    """pix2pix U-Net with z and the cluster one-hot added at every encoder layer.

    Inputs (a dict): "edge" [N, S, S, input_channels] in [−1, 1], "noise" [N, noise_dim]
    (z ~ N(0, I)), "cluster_onehot" [N, num_clusters]. Output: [N, S, S, output_channels] in
    [−1, 1] (tanh).

    Encoder level i (i = 0 … depth−1), input x_i: concat(x_i, tiled [z, one-hot]) →
    (LeakyReLU 0.2 unless i = 0) → 4×4/2 conv (base_filters·min(2^i, 8)) → instance norm
    (except the outermost and the innermost, whose output is 1×1). Decoder level i: ReLU →
    ×2 up-sampling (`up_type`: a 4×4/2 transposed conv, or nearest ×2 + 3×3 conv) → instance
    norm, concatenated with x_i; the outermost ends in tanh.
    Note that, as in BicycleGAN, the LeakyReLU also acts on the tiled code.

    Args:
        image_size: S, the side of the square input and output.
        base_filters: filters of the first encoder layer (pix2pix's ngf; 64 in the paper).
        num_clusters: K, the size of the cluster one-hot.
        noise_dim: size of z (MSGAN/BicycleGAN nz = 8).
        input_channels: channels of the edge image.
        output_channels: channels of the generated image.
        depth: encoder levels; defaults to log2(S) (a 1×1 bottleneck, pix2pix's unet_256 at
            256²). S must be divisible by 2^depth.
        dropout_rate: dropout in the inner up-sampling levels at full width (pix2pix's
            `--use_dropout` is 0.5; MSGAN's default is off).
        spectral_normalization: wrap every conv in `keras.layers.SpectralNormalization`.
        up_type: "transpose" (pix2pix's, BicycleGAN's "basic") or "nearest" (BicycleGAN's
            `--upsample nearest`; no checkerboard, see `pop_tf.layers.upsample`).
        **kwargs: `keras.Model` arguments (name, trainable).

    References:
        Ronneberger, Fischer, Brox, "U-Net", MICCAI 2015; pix2pix (Isola et al. 2017);
        BicycleGAN `models/networks.py` (`G_Unet_add_all`, `UnetBlock_with_z`).
    """

    def __init__(self, image_size, base_filters=64, num_clusters=10, noise_dim=8,
                 input_channels=3, output_channels=3, depth=None, dropout_rate=0.0,
                 spectral_normalization=True, up_type="transpose", **kwargs):
        image_size = positive_int(image_size, "image_size", 4)
        if up_type not in UP_TYPES:
            raise ValueError(f"up_type must be one of {UP_TYPES}, got {up_type!r}.")
        base_filters = positive_int(base_filters, "base_filters")
        num_clusters = positive_int(num_clusters, "num_clusters")
        noise_dim = positive_int(noise_dim, "noise_dim")
        input_channels = positive_int(input_channels, "input_channels")
        output_channels = positive_int(output_channels, "output_channels")
        if depth is None:
            levels = math.log2(image_size)
            if levels != int(levels):
                raise ValueError(
                    f"image_size must be a power of two when depth is not given, got "
                    f"{image_size}.")
            depth = int(levels)
        depth = positive_int(depth, "depth", 2)
        if image_size % (2 ** depth):
            raise ValueError(
                f"depth={depth} needs image_size divisible by {2 ** depth}, got {image_size}.")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}.")

        inputs = {
            "edge": keras.Input((image_size, image_size, input_channels), name="edge"),
            "noise": keras.Input((noise_dim,), name="noise"),
            "cluster_onehot": keras.Input((num_clusters,), name="cluster_onehot"),
        }
        code = keras.layers.Concatenate(name="code")(
            [inputs["noise"], inputs["cluster_onehot"]])
        filters = [base_filters * min(2 ** i, MAX_FILTER_MULTIPLIER) for i in range(depth)]
        common = dict(spectral_normalization=spectral_normalization)

        x = inputs["edge"]
        level_inputs = []
        for i in range(depth):
            level_inputs.append(x)
            h = SpatialBroadcastConcat(name=f"down{i}_add_code")([x, code])
            if i > 0:
                h = keras.layers.LeakyReLU(negative_slope=0.2, name=f"down{i}_lrelu")(h)
            # Instance norm on the 1×1 innermost output would zero it; pix2pix has none there.
            normalized = 0 < i < depth - 1
            x = ConvBlock(filters[i], 4, strides=2, padding=1, pad_type="zero",
                          normalization="instance" if normalized else None,
                          name=f"down{i}", **common)(h)

        for i in reversed(range(depth)):
            h = keras.layers.ReLU(name=f"up{i}_relu")(x)
            if i == 0:
                x = upsample(h, output_channels, up_type, activation="tanh", name="up0",
                             **common)
                break
            h = upsample(h, filters[i - 1], up_type, normalization="instance", name=f"up{i}",
                         **common)
            inner_full_width = i < depth - 1 and filters[i] == filters[-1]
            if dropout_rate > 0 and inner_full_width:
                h = keras.layers.Dropout(dropout_rate, name=f"up{i}_dropout")(h)
            x = keras.layers.Concatenate(name=f"up{i}_skip")([h, level_inputs[i]])

        super().__init__(inputs=inputs, outputs=x, **kwargs)
        self.image_size = image_size
        self.base_filters = base_filters
        self.num_clusters = num_clusters
        self.noise_dim = noise_dim
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.depth = depth
        self.dropout_rate = float(dropout_rate)
        self.spectral_normalization = spectral_mode(spectral_normalization)
        self.up_type = up_type

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_size": self.image_size,
            "base_filters": self.base_filters,
            "num_clusters": self.num_clusters,
            "noise_dim": self.noise_dim,
            "input_channels": self.input_channels,
            "output_channels": self.output_channels,
            "depth": self.depth,
            "dropout_rate": self.dropout_rate,
            "spectral_normalization": self.spectral_normalization,
            "up_type": self.up_type,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ---------------------------------------------------------------------------------------------
# Discriminator
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiScaleDiscriminator(keras.Model):
    """Conditional multi-scale PatchGAN on concat(edge, image, tiled cluster one-hot).

    Inputs (a dict): "edge" [N, H, W, input_channels], "image" [N, H, W, output_channels],
    "cluster_onehot" [N, num_clusters]. Output: a list with one logit map [N, h_s, w_s, 1] per
    scale (no sigmoid: LSGAN). Scale s sees the input average-pooled s times
    (3×3, stride 2, padding 1, padding not counted) and has round(base_filters / 2^s) base
    filters. Each scale: 4×4/2 conv + LReLU; (num_layers − 1) × [4×4/2 conv + norm + LReLU];
    4×4/1 conv + norm + LReLU; 4×4/1 conv → 1, all with 1 pixel of zero padding. Spatial sizes
    are left free; `patch_sizes` says which image sizes leave every scale a non-empty map.

    Args:
        num_scales: number of scales (BicycleGAN num_Ds = 2).
        base_filters: filters of the first layer at full scale (ndf; 64 in the paper).
        num_layers: stride-2 layers per scale (n_layers_D = 3).
        num_clusters: K, the size of the cluster one-hot.
        input_channels: channels of the edge image.
        output_channels: channels of the (real or generated) image.
        normalization: "instance" (MSGAN's `--norm instance`) or None.
        spectral_normalization: wrap every conv in `keras.layers.SpectralNormalization`.
        **kwargs: `keras.Model` arguments (name, trainable).

    References:
        pix2pix PatchGAN (Isola et al. 2017); BicycleGAN `models/networks.py`
        (`D_NLayersMulti`); MSGAN `Pix2Pix-Mode-Seeking` (`--netD basic_256_multi`).
    """

    def __init__(self, num_scales=2, base_filters=64, num_layers=3, num_clusters=10,
                 input_channels=3, output_channels=3, normalization="instance",
                 spectral_normalization=True, **kwargs):
        num_scales = positive_int(num_scales, "num_scales")
        base_filters = positive_int(base_filters, "base_filters")
        num_layers = positive_int(num_layers, "num_layers")
        num_clusters = positive_int(num_clusters, "num_clusters")
        input_channels = positive_int(input_channels, "input_channels")
        output_channels = positive_int(output_channels, "output_channels")
        if normalization not in ("instance", None):
            raise ValueError(
                f"normalization must be 'instance' or None, got {normalization!r}.")

        inputs = {
            "edge": keras.Input((None, None, input_channels), name="edge"),
            "image": keras.Input((None, None, output_channels), name="image"),
            "cluster_onehot": keras.Input((num_clusters,), name="cluster_onehot"),
        }
        x = keras.layers.Concatenate(name="pair")([inputs["edge"], inputs["image"]])
        x = SpatialBroadcastConcat(name="add_cluster")([x, inputs["cluster_onehot"]])
        common = dict(padding=1, pad_type="zero",
                      spectral_normalization=spectral_normalization)
        outputs = []
        for scale in range(num_scales):
            if scale > 0:
                x = PaddedAveragePooling2D(3, 2, 1, name=f"downsample{scale}")(x)
            ndf = max(1, int(round(base_filters / 2 ** scale)))
            h = ConvBlock(ndf, 4, strides=2, activation="lrelu", name=f"s{scale}_conv0",
                          **common)(x)
            for n in range(1, num_layers):
                h = ConvBlock(ndf * min(2 ** n, MAX_FILTER_MULTIPLIER), 4, strides=2,
                              normalization=normalization, activation="lrelu",
                              name=f"s{scale}_conv{n}", **common)(h)
            h = ConvBlock(ndf * min(2 ** num_layers, MAX_FILTER_MULTIPLIER), 4, strides=1,
                          normalization=normalization, activation="lrelu",
                          name=f"s{scale}_conv{num_layers}", **common)(h)
            outputs.append(ConvBlock(1, 4, strides=1, name=f"s{scale}_logits", **common)(h))

        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.num_scales = num_scales
        self.base_filters = base_filters
        self.num_layers = num_layers
        self.num_clusters = num_clusters
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.normalization = normalization
        self.spectral_normalization = spectral_mode(spectral_normalization)

    @staticmethod
    def patch_sizes(image_size, num_scales=2, num_layers=3):
        """Side of each scale's logit map for a square input of side `image_size`.

        Args:
            image_size: input side.
            num_scales: as in the constructor.
            num_layers: as in the constructor.

        Returns:
            List of ints, one per scale; a value below 1 means the input is too small.
        """
        sizes = []
        size = image_size
        for scale in range(num_scales):
            if scale > 0:
                size = (size - 1) // 2 + 1
            patch = size
            for _ in range(num_layers):
                patch = (patch - 2) // 2 + 1
            sizes.append(patch - 2)
        return sizes

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_scales": self.num_scales,
            "base_filters": self.base_filters,
            "num_layers": self.num_layers,
            "num_clusters": self.num_clusters,
            "input_channels": self.input_channels,
            "output_channels": self.output_channels,
            "normalization": self.normalization,
            "spectral_normalization": self.spectral_normalization,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------


class ClusterPix2Pix(keras.Model):
    """Trainer of the cluster-conditioned pix2pix GAN with mode-seeking and cluster losses.

    Each training batch is a dict {"edge": float [N,S,S,C] in [−1,1], "image": float [N,S,S,C]
    in [−1,1], "cluster": int [N]} where "cluster" is the target image's cluster id. One
    `train_step` draws z (stateless, from `seed` and the step counter), then runs `_g_step` and
    `_d_step`, each with its own `GradientTape` over an explicit variable list and its own
    optimizer; no `trainable` flag is ever toggled. Generator losses (`diversity`):

    - "none": LSGAN + λ_L1·L1(G(x, z), y)  (pix2pix-like, one z);
    - "ms": two z's in one concatenated batch, + λ_ms·L_ms (MSGAN);
    - "clusters": "ms" + λ_d·L_d + gate·λ_m·L_m with gate = [step ≥ mahalanobis_warmup_steps]
      (Suzuki et al.); L_d and L_m apply to every generated image of the batch.

    The feature extractor E maps G's output ([N, S, S, C] in [−1, 1]) to [N, D] features; any
    resizing or rescaling it needs (EfficientNet-B0 wants 224² in [0, 255]) belongs inside it.
    E is frozen by construction: it is called with `training=False` (no batch-norm updates),
    kept out of Keras tracking, and the generator's tape watches only the generator's
    variables, so E's weights get no gradient and are in no optimizer.

    Args:
        generator: a `UNetGenerator` (or any model with the same inputs and `image_size`,
            `noise_dim`, `num_clusters` attributes).
        discriminator: a `MultiScaleDiscriminator` with the same `num_clusters`.
        diversity: "none", "ms" or "clusters".
        feature_extractor: E (a Keras model or a callable); required for "clusters".
        cluster_means: [K, D] cluster means μ_i; required for "clusters".
        inverse_covariances: [K, D, D] inverse covariances restricted to each cluster's
            selected features and zero-padded (see `pop_tf.losses.masked_inverse_covariances`);
            required for "clusters".
        feature_masks: [K, D] 0/1 masks of each cluster's selected features (the n−1 rule);
            all ones when omitted.
        cluster_shares: [K] share of the training set in each cluster, used by `sample` and
            `draw_clusters`; uniform when omitted. Normalised to sum to 1.
        lambda_reconstruction: weight of the L1 loss to the target (10; DMIT's name for its
            reconstruction weight, so one idea has one name).
        lambda_ms: weight of the mode-seeking loss (1).
        lambda_d: weight of the cluster-mean loss (5).
        lambda_m: weight of the Mahalanobis loss (0.2).
        mahalanobis_warmup_steps: training steps before the Mahalanobis loss is switched on.
        seed: integer seed of every random draw made by the trainer.
        **kwargs: `keras.Model` arguments (name).

    References:
        MSGAN `Pix2Pix-Mode-Seeking/models/pix2pix_model.py`; Suzuki, Sakaue, Sato 2022.
    """

    def __init__(self, generator, discriminator, diversity="clusters", feature_extractor=None,
                 cluster_means=None, inverse_covariances=None, feature_masks=None,
                 cluster_shares=None, lambda_reconstruction=10.0, lambda_ms=1.0, lambda_d=5.0,
                 lambda_m=0.2, mahalanobis_warmup_steps=0, seed=0, **kwargs):
        super().__init__(**kwargs)
        if diversity not in DIVERSITY_MODES:
            raise ValueError(f"diversity must be one of {DIVERSITY_MODES}, got {diversity!r}.")
        num_clusters = generator.num_clusters
        if discriminator.num_clusters != num_clusters:
            raise ValueError(
                f"discriminator.num_clusters ({discriminator.num_clusters}) must equal "
                f"generator.num_clusters ({num_clusters}).")
        for name, value in (("lambda_reconstruction", lambda_reconstruction), ("lambda_ms", lambda_ms),
                            ("lambda_d", lambda_d), ("lambda_m", lambda_m)):
            if not value >= 0:
                raise ValueError(f"{name} must be ≥ 0, got {value!r}.")
        sizes = MultiScaleDiscriminator.patch_sizes(
            generator.image_size, discriminator.num_scales, discriminator.num_layers)
        if min(sizes) < 1:
            raise ValueError(
                f"image_size {generator.image_size} is too small for a discriminator with "
                f"num_scales={discriminator.num_scales} and num_layers="
                f"{discriminator.num_layers} (patch sizes {sizes}); lower num_layers or "
                "num_scales.")

        self.generator = generator
        self.discriminator = discriminator
        self.diversity = diversity
        self.lambda_reconstruction = float(lambda_reconstruction)
        self.lambda_ms = float(lambda_ms)
        self.lambda_d = float(lambda_d)
        self.lambda_m = float(lambda_m)
        self.mahalanobis_warmup_steps = positive_int(
            mahalanobis_warmup_steps, "mahalanobis_warmup_steps", 0)
        self.seed = positive_int(seed, "seed", 0)
        self.num_clusters = num_clusters
        # MSGAN pushes two z's through G per condition; plain pix2pix needs one.
        self.num_draws = 1 if diversity == "none" else 2

        stats = cluster_conditioning.check_statistics(
            num_clusters, diversity, cluster_shares, feature_extractor, cluster_means,
            inverse_covariances, feature_masks)
        self.cluster_shares = stats.shares
        self.cluster_means, self.inverse_covariances = stats.means, stats.inverse_covariances
        self.feature_masks = stats.feature_masks
        self._extractor = Untracked(feature_extractor)

        self.step_counter = self.add_weight(
            name="step_counter", shape=(), dtype="int64", initializer="zeros",
            trainable=False, aggregation="only_first_replica")
        names = ["g_loss", "d_loss", "adversarial_loss", "l1_loss"]
        if diversity != "none":
            names.append("mode_seeking_loss")
        if diversity == "clusters":
            names += ["cluster_mean_loss", "mahalanobis_loss"]
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.g_optimizer = None
        self.d_optimizer = None
        # The networks are built (functional); nothing is left for Keras to build by tracing.
        self.built = True

    # -- Keras plumbing ------------------------------------------------------------------------

    @property
    def feature_extractor(self):
        """The frozen feature extractor E (not tracked by this model)."""
        return self._extractor.value

    @property
    def metrics(self):
        # Listing the trackers here makes fit()/evaluate() reset them every epoch and log them.
        return list(self._trackers.values())

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        """Sets one optimizer per network and builds each on its own variables.

        Building here (inside the user's `tf.distribute` scope, before `fit`) binds each Keras
        optimizer to its variable set; `g_optimizer` is also passed to Keras as `optimizer`, so
        callbacks (TensorBoard's learning rate and iterations) report the generator's.

        Args:
            g_optimizer: a `keras.optimizers.Optimizer` for the generator.
            d_optimizer: a different optimizer instance for the discriminator.
            **kwargs: further `keras.Model.compile` arguments (e.g. `jit_compile`,
                `steps_per_execution`); `loss` and `metrics` are not used.
        """
        if g_optimizer is None or d_optimizer is None:
            raise ValueError("compile needs both g_optimizer and d_optimizer.")
        if g_optimizer is d_optimizer:
            raise ValueError(
                "g_optimizer and d_optimizer must be two optimizer instances: a Keras optimizer "
                "is bound to the variables it was built with.")
        for optimizer, network in ((g_optimizer, self.generator),
                                   (d_optimizer, self.discriminator)):
            if not optimizer.built:
                optimizer.build(network.trainable_variables)
        super().compile(optimizer=g_optimizer, **kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    def call(self, inputs, training=False):
        """G's output for {"edge", "cluster" (int ids), optional "noise"}; z = 0 when absent.

        Lets Keras (and `tf.distribute`) trace and build the model; use `sample` for draws.
        """
        edge = ops.convert_to_tensor(inputs["edge"], "float32")
        onehot = ops.one_hot(ops.reshape(ops.cast(inputs["cluster"], "int32"), (-1,)),
                             self.num_clusters)
        noise = inputs.get("noise") if isinstance(inputs, dict) else None
        if noise is None:
            noise = ops.zeros((ops.shape(edge)[0], self.generator.noise_dim))
        return self.generator(
            {"edge": edge, "noise": noise, "cluster_onehot": onehot}, training=training)

    # -- pieces shared by train_step and test_step ----------------------------------------------

    def _unpack(self, data):
        if not isinstance(data, dict) or not {"edge", "image", "cluster"} <= set(data):
            raise ValueError(
                "Each batch must be a dict with keys 'edge', 'image' and 'cluster', got "
                f"{type(data).__name__} {sorted(data) if isinstance(data, dict) else ''}.")
        edge = tf.cast(data["edge"], tf.float32)
        image = tf.cast(data["image"], tf.float32)
        cluster = tf.reshape(tf.cast(data["cluster"], tf.int32), [-1])
        return edge, image, cluster, tf.one_hot(cluster, self.num_clusters)

    def _noise(self, batch_size, stream):
        """z for `num_draws` draws per sample, [num_draws·N, nz], from (seed, stream, step): this
        replica's rows of the global batch's draw (`distribution.replica_normal`), so reproducible,
        different on every replica, and the same however many replicas share the batch."""
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([self.seed, stream], tf.int64), tf.convert_to_tensor(self.step_counter))
        # Folding in 0 (once the replica id) keeps the draws of earlier single-device runs.
        seed = tf.random.experimental.stateless_fold_in(seed, tf.constant(0, tf.int64))
        return distribution.replica_normal(batch_size, self.generator.noise_dim, seed, groups=self.num_draws)

    def _repeat(self, tensor, times):
        return tf.concat([tensor] * times, axis=0)

    def _generate(self, edge, onehot, noise, training):
        # float32 whatever G computes in (a mixed policy): the losses and D's real images are float32.
        return tf.cast(self.generator({
            "edge": self._repeat(edge, self.num_draws),
            "noise": noise,
            "cluster_onehot": self._repeat(onehot, self.num_draws),
        }, training=training), tf.float32)

    def _features(self, images):
        extractor = self.feature_extractor
        if isinstance(extractor, keras.layers.Layer):
            return extractor(images, training=False)
        return extractor(images)

    def _generator_losses(self, edge, image, cluster, onehot, fakes, noise):
        """Every generator loss term (unweighted) and their weighted sum "g_loss".

        D is called with training=False: in training mode its spectral normalisation would
        rewrite D's kernels during the generator's step.
        """
        batch = tf.shape(edge)[0]
        fake_logits = self.discriminator({
            "edge": self._repeat(edge, self.num_draws),
            "image": fakes,
            "cluster_onehot": self._repeat(onehot, self.num_draws),
        }, training=False)
        # Mean over the concatenated draws × num_draws = MSGAN's sum over the two fakes.
        adversarial = self.num_draws * L.least_squares_generator_loss(fake_logits)
        l1 = L.l1_reconstruction_loss(fakes[:batch], image)
        losses = {"adversarial_loss": adversarial, "l1_loss": l1}
        total = adversarial + self.lambda_reconstruction * l1
        if self.diversity != "none":
            ms = L.mode_seeking_loss(fakes[:batch], fakes[batch:], noise[:batch], noise[batch:])
            losses["mode_seeking_loss"] = ms
            total += self.lambda_ms * ms
        if self.diversity == "clusters":
            features = tf.cast(self._features(fakes), tf.float32)
            ids = self._repeat(cluster, self.num_draws)
            l_d = L.cluster_mean_loss(features, self.cluster_means, ids)
            l_m = L.mahalanobis_loss(features, self.cluster_means, self.inverse_covariances,
                                     self.feature_masks, ids)
            # A tensor comparison, so that switching L_m on does not retrace the step.
            gate = tf.cast(
                tf.convert_to_tensor(self.step_counter) >= self.mahalanobis_warmup_steps,
                tf.float32)
            losses["cluster_mean_loss"] = l_d
            losses["mahalanobis_loss"] = l_m
            total += self.lambda_d * l_d + gate * self.lambda_m * l_m
        losses["g_loss"] = total
        return losses

    def _discriminator_losses(self, edge, image, onehot, fakes, training):
        """LSGAN loss of D on the real pairs and every fake, from one D call."""
        batch = tf.shape(edge)[0]
        logits = self.discriminator({
            "edge": self._repeat(edge, 1 + self.num_draws),
            "image": tf.concat([image, fakes], axis=0),
            "cluster_onehot": self._repeat(onehot, 1 + self.num_draws),
        }, training=training)
        real = [scale[:batch] for scale in logits]
        fake = [scale[batch:] for scale in logits]
        # num_draws × (real + mean over fakes) = MSGAN's 2·real + fake1 + fake2.
        return {"d_loss": self.num_draws * L.least_squares_discriminator_loss(real, fake)}

    def compute_losses(self, data, training=False):
        """All losses of one batch without updating anything (what `test_step` logs).

        Args:
            data: a batch dict (see the class docstring).
            training: run the networks in training mode (spectral normalisation then updates
                their kernels).

        Returns:
            Dict of scalar tensors, keyed like the loss trackers.
        """
        edge, image, cluster, onehot = self._unpack(data)
        noise = self._noise(tf.shape(edge)[0], stream=1)
        fakes = self._generate(edge, onehot, noise, training=training)
        losses = self._generator_losses(edge, image, cluster, onehot, fakes, noise)
        losses.update(self._discriminator_losses(edge, image, onehot, fakes, training=training))
        return losses

    # -- training --------------------------------------------------------------------------------

    def _replica_scale(self):
        # Gradients are summed over replicas; a per-replica mean loss must be divided by them.
        return tf.constant(1.0 / tf.distribute.get_strategy().num_replicas_in_sync, tf.float32)

    def _generator_forward(self, edge, image, cluster, onehot, noise):
        """G's forward pass and losses, recorded on a tape that watches only G's variables.

        E and D sit on the loss path; not watching them is what keeps them frozen here (no
        gradient is ever computed for their weights).

        Returns:
            (tape, watched G variables, generated images, losses dict).
        """
        watched = tf_variables(self.generator.trainable_variables)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(watched)
            fakes = self._generate(edge, onehot, noise, training=True)
            losses = self._generator_losses(edge, image, cluster, onehot, fakes, noise)
        return tape, watched, fakes, losses

    def _g_step(self, edge, image, cluster, onehot, noise):
        """One generator update; returns the generated images (pre-update G) and the losses."""
        tape, watched, fakes, losses = self._generator_forward(
            edge, image, cluster, onehot, noise)
        # A LossScaleOptimizer (float16) scales the loss and unscales the gradients in apply.
        gradients = tape.gradient(
            self.g_optimizer.scale_loss(losses["g_loss"]), watched, output_gradients=self._replica_scale())
        self.g_optimizer.apply_gradients(zip(gradients, self.generator.trainable_variables))
        return fakes, losses

    def _d_step(self, edge, image, onehot, fakes):
        """One discriminator update on the real pairs and the given (detached) fakes."""
        watched = tf_variables(self.discriminator.trainable_variables)
        fakes = tf.stop_gradient(fakes)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(watched)
            losses = self._discriminator_losses(edge, image, onehot, fakes, training=True)
        gradients = tape.gradient(
            self.d_optimizer.scale_loss(losses["d_loss"]), watched, output_gradients=self._replica_scale())
        self.d_optimizer.apply_gradients(zip(gradients, self.discriminator.trainable_variables))
        return losses

    def _record(self, losses):
        for name, tracker in self._trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data):
        if self.g_optimizer is None:
            raise ValueError("Call compile(g_optimizer, d_optimizer) before training.")
        edge, image, cluster, onehot = self._unpack(data)
        noise = self._noise(tf.shape(edge)[0], stream=0)
        # G first, as MSGAN: the D step then scores the fakes of the pre-update generator.
        fakes, losses = self._g_step(edge, image, cluster, onehot, noise)
        losses.update(self._d_step(edge, image, onehot, fakes))
        self.step_counter.assign_add(1)
        return self._record(losses)

    def test_step(self, data):
        return self._record(self.compute_losses(data, training=False))

    # -- sampling --------------------------------------------------------------------------------

    def draw_clusters(self, num, seed=0):
        """Cluster ids drawn with probability equal to the cluster shares (test-time rule).

        Args:
            num: number of ids.
            seed: integer seed; the same seed gives the same ids.

        Returns:
            int32 tensor [num].
        """
        return cluster_conditioning.draw_clusters(
            self.cluster_shares, positive_int(num, "num"), positive_int(seed, "seed", 0))

    def sample(self, edges, clusters=None, seed=0, num_samples=1):
        """Generates `num_samples` images per edge map, deterministically for a seed.

        Args:
            edges: float [N, S, S, C] in [−1, 1].
            clusters: None to draw every sample's cluster from the cluster shares, or an int
                (one cluster for all) or int array [N] (one per edge map).
            seed: integer seed of the cluster ids and of z.
            num_samples: images per edge map.

        Returns:
            (images, cluster_ids): float32 [N, num_samples, S, S, C] in [−1, 1] and int32
            [N, num_samples].
        """
        num_samples = positive_int(num_samples, "num_samples")
        seed = positive_int(seed, "seed", 0)
        edges = tf.convert_to_tensor(edges, tf.float32)
        count = int(edges.shape[0])
        if clusters is None:
            ids = tf.reshape(self.draw_clusters(count * num_samples, seed),
                             [count, num_samples])
        else:
            ids = np.asarray(clusters, dtype=np.int64)
            if ids.ndim == 0:
                ids = np.full([count], ids)
            if (ids.shape != (count,) or np.any(ids < 0)
                    or np.any(ids >= self.num_clusters)):
                raise ValueError(
                    f"clusters must be one id or {count} ids in [0, {self.num_clusters}), "
                    f"got {clusters!r}.")
            ids = tf.constant(np.repeat(ids[:, None], num_samples, axis=1), tf.int32)
        noise = tf.random.stateless_normal(
            [count * num_samples, self.generator.noise_dim],
            seed=tf.constant([seed, 1], tf.int64))
        images = tf.cast(self.generator({
            "edge": tf.repeat(edges, num_samples, axis=0),
            "noise": noise,
            "cluster_onehot": tf.one_hot(tf.reshape(ids, [-1]), self.num_clusters),
        }, training=False), tf.float32)
        return tf.reshape(images, [count, num_samples] + images.shape[1:].as_list()), ids
