"""DMIT: multi-mapping image-to-image translation by disentangling content and style.

The translation module of the popularity paper (Yu et al. 2019's DMIT), ported from the
official PyTorch code (Xiaoming-Yu/DMIT, `models/modules/network.py`, `models/base_model.py`):

- `ContentEncoder` E_c: image → domain-invariant content tensor (256 × S/4 × S/4 at paper
  widths).
- `StyleEncoder` E_s: image → (style, μ, logvar), a VAE posterior; style = μ + ε·exp(logvar / 2)
  with the noise ε passed in (stateless, seeded by the caller).
- `Generator` (DMIT's decoder): content + code → image, code = concat(domain label, style
  [, cluster one-hot]); 6 residual blocks normalised by CBIN on the code, 2 up-sampling blocks
  (layer norm + ReLU), 7×7 conv + tanh.
- `ImageDiscriminator` D_x: 2 scales, conditioned on the label through CBIN (not projection),
  hinge loss. `ContentDiscriminator` D_c: on the content tensor, conditioned on the label, LSGAN.

The trainer that runs DMIT's updates, `DMITTrainer`, is `pop_tf.models.dmit_trainer`.

Faithful to the official code (defaults = `options/*.py`): spectral normalisation on every
conv, transposed conv and dense layer, N(0, 0.02) init; hinge image GAN whose D loss counts the
real image with the wrong (target) label as fake (1 + ½ + ½ weighting); label-conditional
LSGAN content GAN (real = (content, c_src), fake = (same content, c_tgt)); KL summed;
λ_rec 10, λ_kl 0.01, λ_cyc 10, λ_style (latent regression) 1, λ_content 1, λ_div 0.05,
adversarial 1; prior styles N(0, I).

Channel caps scale with the widths (official: fixed 256 / 512 / 1024, identical at paper
widths), so narrow demo/test networks stay narrow.

References:
    Yu, Wu, Cai, Li, Wang, Zhang, "Multi-mapping Image-to-Image Translation via Learning
    Disentanglement", NeurIPS 2019 (DMIT; code: github.com/Xiaoming-Yu/DMIT).
    Yu et al., "SingleGAN" (ACCV 2018) and arXiv:1806.10050 (central biasing normalisation).
    Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018.
    Mao et al., "Mode Seeking Generative Adversarial Networks for Diverse Image Synthesis",
    CVPR 2019. Suzuki, Sakaue, Sato, "Diversifying Image Synthesis using Data Classification",
    VISAPP 2022.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from pop_tf.layers import (
    UP_TYPES,
    ConvBlock,
    DownResidualBlock,
    PaddedAveragePooling2D,
    ResidualBlock,
    spectral_dense,
    upsample,
)
from pop_tf.layers.blocks import CONDITIONAL_NORMS
from pop_tf.layers.spectral import spectral_mode
from pop_tf.models._checks import check_choice, rate
from pop_tf.models._checks import positive_int as _positive_int

PACKAGE = "pop_tf"


# ---------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class ContentEncoder(keras.Model):
    """DMIT's content encoder E_c: image → content tensor [N, S/2^d, S/2^d, base·2^d].

    7×7 conv (reflection padding 3, no bias) → instance norm → LeakyReLU 0.2; then
    `num_downsampling` × [4×4/2 conv (reflection padding 1, no bias) → IN → LReLU] doubling the
    channels (capped at 16·base, the official 1024 at base 64); then `num_residual` residual
    blocks (IN, LReLU). Every conv is spectrally normalised. Spatial sizes are free; S must be
    divisible by 2^num_downsampling for the decoder to give back S.

    Args:
        base_filters: channels of the first conv (nef = 64).
        num_downsampling: stride-2 convs (n_ds_blocks = 2).
        num_residual: residual blocks (n_content_resblocks = 4).
        input_channels: image channels.
        spectral_normalization: wrap every conv in `keras.layers.SpectralNormalization`.
        **kwargs: `keras.Model` arguments (name, trainable).

    References:
        DMIT `models/modules/network.py` (`ContentEncoder`).
    """

    def __init__(self, base_filters=64, num_downsampling=2, num_residual=4, input_channels=3,
                 spectral_normalization=True, **kwargs):
        base_filters = _positive_int(base_filters, "base_filters")
        num_downsampling = _positive_int(num_downsampling, "num_downsampling", 0)
        num_residual = _positive_int(num_residual, "num_residual", 0)
        input_channels = _positive_int(input_channels, "input_channels")
        common = dict(pad_type="reflect", use_bias=False, normalization="instance",
                      activation="lrelu", spectral_normalization=spectral_normalization)

        image = keras.Input((None, None, input_channels), name="image")
        h = ConvBlock(base_filters, 7, padding=3, name="stem", **common)(image)
        channels = base_filters
        for i in range(num_downsampling):
            channels = min(channels * 2, 16 * base_filters)
            h = ConvBlock(channels, 4, strides=2, padding=1, name=f"down{i}", **common)(h)
        for i in range(num_residual):
            h = ResidualBlock(normalization="instance", activation="lrelu",
                              spectral_normalization=spectral_normalization, name=f"res{i}")(h)
        super().__init__(inputs=image, outputs=h, **kwargs)
        self.base_filters = base_filters
        self.num_downsampling = num_downsampling
        self.num_residual = num_residual
        self.input_channels = input_channels
        self.spectral_normalization = spectral_mode(spectral_normalization)
        self.content_channels = channels

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "base_filters": self.base_filters, "num_downsampling": self.num_downsampling,
            "num_residual": self.num_residual, "input_channels": self.input_channels,
            "spectral_normalization": self.spectral_normalization,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Reparameterize(keras.layers.Layer):
    """VAE sampling z = μ + ε·exp(logvar / 2) with the noise ε given as an input.

    Called on `[mu, logvar, noise]`; with ε = 0 it returns μ. Taking ε as an input (rather
    than drawing it) keeps the draw stateless and seedable by the caller.

    References:
        Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014; DMIT
        `StyleEncoder.reparametrize`.
    """

    def call(self, inputs):
        mu, logvar, noise = inputs
        return mu + ops.cast(noise, mu.dtype) * ops.exp(0.5 * logvar)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package=PACKAGE)
class StyleEncoder(keras.Model):
    """DMIT's VAE style encoder E_s: {"image", "noise"} → [style, μ, logvar], each [N, style_dim].

    4×4/2 conv (reflection padding 1, bias) → (num_blocks − 1) down-sampling residual blocks
    (IN, LReLU; channels base·(n+1), capped at 4·base, i.e. 64 → 128 → 192 → 256) →
    LReLU → global average pool → two SN-dense heads for μ and logvar; style = μ +
    noise·exp(logvar / 2). The pooled features keep their batch axis for N = 1 (the official
    code's `.squeeze()` in `StyleEncoder.forward` drops it).

    Use `encode` to get the style from a seed (or the mean) without building the noise.

    Args:
        style_dim: size of the style code (n_style = 8).
        base_filters: channels of the first conv (nef = 64).
        num_blocks: 1 + number of residual blocks (n_style_blocks = 4).
        input_channels: image channels.
        spectral_normalization: wrap every conv and dense in `SpectralNormalization`.
        normalization: the residual blocks' normalisation, "instance" (DMIT) or None (MUNIT's
            style encoder: instance norm removes the channel means and variances that carry
            colour, which the style code must then recover from the shortcuts alone).
        **kwargs: `keras.Model` arguments.

    References:
        DMIT `models/modules/network.py` (`StyleEncoder`, `DownResidualBlock`); Huang et al.,
        MUNIT, ECCV 2018, Sec. 3 (no normalisation in the style encoder).
    """

    def __init__(self, style_dim=8, base_filters=64, num_blocks=4, input_channels=3,
                 spectral_normalization=True, normalization="instance", **kwargs):
        style_dim = _positive_int(style_dim, "style_dim")
        base_filters = _positive_int(base_filters, "base_filters")
        num_blocks = _positive_int(num_blocks, "num_blocks")
        input_channels = _positive_int(input_channels, "input_channels")

        inputs = {"image": keras.Input((None, None, input_channels), name="image"),
                  "noise": keras.Input((style_dim,), name="noise")}
        h = ConvBlock(base_filters, 4, strides=2, padding=1, pad_type="reflect", use_bias=True,
                      spectral_normalization=spectral_normalization, name="head")(inputs["image"])
        for n in range(1, num_blocks):
            h = DownResidualBlock(min(base_filters * (n + 1), 4 * base_filters),
                                  normalization=normalization, activation="lrelu",
                                  spectral_normalization=spectral_normalization,
                                  name=f"block{n}")(h)
        h = keras.layers.LeakyReLU(negative_slope=0.2, name="lrelu")(h)
        h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
        mu = spectral_dense(style_dim, spectral_normalization=spectral_normalization,
                            name="mu")(h)
        logvar = spectral_dense(style_dim, spectral_normalization=spectral_normalization,
                                name="logvar")(h)
        style = Reparameterize(name="reparameterize")([mu, logvar, inputs["noise"]])
        super().__init__(inputs=inputs, outputs=[style, mu, logvar], **kwargs)
        self.style_dim = style_dim
        self.base_filters = base_filters
        self.num_blocks = num_blocks
        self.input_channels = input_channels
        self.spectral_normalization = spectral_mode(spectral_normalization)
        self.normalization = normalization

    def encode(self, images, seed=None, noise=None, training=False):
        """(style, μ, logvar) of `images`, drawing ε from `seed` or using the given `noise`.

        Args:
            images: float [N, H, W, C] in [−1, 1].
            seed: None, an int, or an int tensor of shape [2] (a stateless seed) for ε ~ N(0, I).
            noise: explicit ε [N, style_dim]; excludes `seed`.
            training: run in training mode (spectral normalisation then updates the kernels).

        Returns:
            [style, mu, logvar], each float [N, style_dim]; style = μ when neither `seed` nor
            `noise` is given.
        """
        if seed is not None and noise is not None:
            raise ValueError("Pass either seed or noise to StyleEncoder.encode, not both.")
        images = tf.cast(tf.convert_to_tensor(images), tf.float32)
        shape = [tf.shape(images)[0], self.style_dim]
        if noise is None:
            if seed is None:
                noise = tf.zeros(shape)
            else:
                seed = tf.convert_to_tensor(seed, tf.int64)
                if seed.shape.rank == 0:
                    seed = tf.stack([seed, tf.constant(0, tf.int64)])
                noise = tf.random.stateless_normal(shape, seed=seed)
        return self({"image": images, "noise": noise}, training=training)

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "style_dim": self.style_dim, "base_filters": self.base_filters,
            "num_blocks": self.num_blocks, "input_channels": self.input_channels,
            "spectral_normalization": self.spectral_normalization,
            "normalization": self.normalization,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ---------------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class Generator(keras.Model):
    """DMIT's decoder G: content + code → image in [−1, 1].

    Inputs (a dict): "content" [N, h, w, content_channels], "label" [N, label_dim] (the domain
    attribute vector), "style" [N, style_dim], and "cluster_onehot" [N, num_clusters] when
    `num_clusters > 0`. code = concat(label, style[, cluster one-hot]) conditions every
    normalisation of the `num_residual` residual blocks through CBIN (instance norm + tanh(SN
    dense(code)) bias, ReLU; or AdaIN, a scale and a bias, with `norm_type="adain"`). Then `num_upsampling` up-sampling blocks halving the channels,
    each with DMIT's layer norm (per-channel affine) and ReLU: "transpose" = 4×4/2 transposed
    conv (DMIT's default `--up_type`), "nearest" = nearest ×2 + 3×3 conv. Then a 7×7 conv
    (reflection padding, bias) + tanh. Output [N, h·2^u, w·2^u, output_channels].

    Args:
        label_dim: size of the domain label vector (popularity × modality one-hots: 4).
        style_dim: size of the style code (8).
        num_clusters: size of the cluster one-hot added to the code (0: none; Suzuki et al.).
        content_channels: channels of the content tensor (nef·2^n_ds = 256).
        num_residual: CBIN residual blocks (n_dec_resblocks = 6).
        num_upsampling: up-sampling blocks (= the content encoder's down-sampling, 2).
        output_channels: image channels.
        up_type: "transpose" or "nearest".
        dropout_rate: dropout in the residual blocks (DMIT `--use_dropout` = 0.5).
        norm_type: how the code conditions the residual blocks (DMIT `--norm_type`): "cbin"
            (bias only, DMIT's default) or "adain" (scale and bias).
        spectral_normalization: wrap every conv and the CBIN dense layers in
            `SpectralNormalization`.
        **kwargs: `keras.Model` arguments.

    References:
        DMIT `models/modules/network.py` (`Decoder`, `ConResidualBlock`, `Upsampling2dBlock`,
        `LayerNorm`) and `models/modules/cbin.py`.
    """

    def __init__(self, label_dim=4, style_dim=8, num_clusters=0, content_channels=256,
                 num_residual=6, num_upsampling=2, output_channels=3, up_type="transpose",
                 dropout_rate=0.0, spectral_normalization=True, norm_type="cbin", **kwargs):
        label_dim = _positive_int(label_dim, "label_dim")
        style_dim = _positive_int(style_dim, "style_dim")
        num_clusters = _positive_int(num_clusters, "num_clusters", 0)
        content_channels = _positive_int(content_channels, "content_channels")
        num_residual = _positive_int(num_residual, "num_residual", 0)
        num_upsampling = _positive_int(num_upsampling, "num_upsampling", 0)
        output_channels = _positive_int(output_channels, "output_channels")
        check_choice(up_type, UP_TYPES, "up_type")
        dropout_rate = rate(dropout_rate, "dropout_rate")
        check_choice(norm_type, tuple(CONDITIONAL_NORMS), "norm_type")
        if content_channels % (2 ** num_upsampling):
            raise ValueError(
                f"content_channels ({content_channels}) must be divisible by "
                f"2^num_upsampling = {2 ** num_upsampling}.")

        inputs = {"content": keras.Input((None, None, content_channels), name="content"),
                  "label": keras.Input((label_dim,), name="label"),
                  "style": keras.Input((style_dim,), name="style")}
        parts = [inputs["label"], inputs["style"]]
        if num_clusters:
            inputs["cluster_onehot"] = keras.Input((num_clusters,), name="cluster_onehot")
            parts.append(inputs["cluster_onehot"])
        code = keras.layers.Concatenate(name="code")(parts)
        h = inputs["content"]
        for i in range(num_residual):
            h = ResidualBlock(conditional=True, activation="relu", dropout_rate=dropout_rate,
                              spectral_normalization=spectral_normalization,
                              conditional_norm=norm_type, name=f"res{i}")([h, code])
        channels = content_channels
        for i in range(num_upsampling):
            channels //= 2
            h = upsample(h, channels, up_type, use_bias=False, normalization="layer",
                         activation="relu", spectral_normalization=spectral_normalization,
                         name=f"up{i}")
        image = ConvBlock(output_channels, 7, padding=3, pad_type="reflect", use_bias=True,
                          activation="tanh", spectral_normalization=spectral_normalization,
                          name="to_image")(h)
        super().__init__(inputs=inputs, outputs=image, **kwargs)
        self.label_dim = label_dim
        self.style_dim = style_dim
        self.num_clusters = num_clusters
        self.content_channels = content_channels
        self.num_residual = num_residual
        self.num_upsampling = num_upsampling
        self.output_channels = output_channels
        self.up_type = up_type
        self.dropout_rate = dropout_rate
        self.norm_type = norm_type
        self.spectral_normalization = spectral_mode(spectral_normalization)

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable, "norm_type": self.norm_type,
            "label_dim": self.label_dim, "style_dim": self.style_dim,
            "num_clusters": self.num_clusters, "content_channels": self.content_channels,
            "num_residual": self.num_residual, "num_upsampling": self.num_upsampling,
            "output_channels": self.output_channels, "up_type": self.up_type,
            "dropout_rate": self.dropout_rate,
            "spectral_normalization": self.spectral_normalization,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ---------------------------------------------------------------------------------------------
# Discriminators
# ---------------------------------------------------------------------------------------------


def _style_discriminator(x, code, base_filters, num_blocks, max_filters, spectral_normalization,
                         prefix):
    """DMIT's `StyleDiscriminator` on symbolic tensors: a patch map [N, h, w, 1].

    4×4/2 conv head (reflection padding 1, bias, no norm or activation) → (num_blocks − 1)
    label-conditional down-sampling residual blocks (CBIN on `code`, LReLU, channels doubling
    up to `max_filters`) → 1×1 conv to one logit per patch.
    """
    h = ConvBlock(base_filters, 4, strides=2, padding=1, pad_type="reflect", use_bias=True,
                  spectral_normalization=spectral_normalization, name=f"{prefix}head")(x)
    channels = base_filters
    for i in range(1, num_blocks):
        channels = min(channels * 2, max_filters)
        h = DownResidualBlock(channels, conditional=True, activation="lrelu",
                              spectral_normalization=spectral_normalization,
                              name=f"{prefix}block{i}")([h, code])
    return ConvBlock(1, 1, use_bias=True, spectral_normalization=spectral_normalization,
                     name=f"{prefix}logits")(h)


def _halvings(size, times):
    for _ in range(times):
        size //= 2
    return size


def image_patch_sizes(image_size, num_scales=2, num_blocks=3):
    """Side of each scale's logit map of an `ImageDiscriminator` on S×S images.

    Args:
        image_size: S.
        num_scales: as in `ImageDiscriminator`.
        num_blocks: as in `ImageDiscriminator`.

    Returns:
        List of ints, one per scale (32 and 16 at S = 256 with the defaults); a value below 1
        means the images are too small.
    """
    sizes = []
    size = image_size
    for scale in range(num_scales):
        if scale > 0:
            size = (size - 1) // 2 + 1  # 3×3/2 average pooling with padding 1
        head = (size + 2 - 4) // 2 + 1 if size >= 2 else 0
        sizes.append(_halvings(head, num_blocks - 1))
    return sizes


def content_patch_size(image_size, num_downsampling=2, num_blocks=5):
    """Side of a `ContentDiscriminator`'s logit map for S×S images (2 at S = 256).

    Args:
        image_size: S.
        num_downsampling: the content encoder's stride-2 convs.
        num_blocks: as in `ContentDiscriminator`.

    Returns:
        int; below 1 means the content tensor is too small for the discriminator.
    """
    size = image_size
    for _ in range(num_downsampling):
        size = (size + 2 - 4) // 2 + 1
    head = (size + 2 - 4) // 2 + 1 if size >= 2 else 0
    return _halvings(head, num_blocks - 1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageDiscriminator(keras.Model):
    """DMIT's multi-scale image discriminator D_x, conditioned on the label through CBIN.

    Inputs (a dict): "image" [N, H, W, C], "label" [N, label_dim] and, when
    `num_clusters > 0`, "cluster_onehot" [N, num_clusters] (joined to the label as the CBIN
    code: Suzuki et al. condition D on the cluster too). Output: a list of `num_scales` logit
    maps [N, h_s, w_s, 1] (raw scores for the hinge loss). Scale s sees the image average-pooled
    s times (3×3, stride 2, padding 1 not counted) and has base_filters / 2^s head channels;
    each scale is a `StyleDiscriminator`: 4×4/2 head, (num_blocks − 1) CBIN down-sampling
    residual blocks, 1×1 conv. Patch maps are 32² and 16² at 256² (`image_patch_sizes`).

    Args:
        label_dim: size of the domain label vector.
        num_scales: scales (DMIT's `MultiStyleDiscriminator` has 2).
        base_filters: head channels at full scale (ndf = 64).
        num_blocks: 1 + CBIN residual blocks per scale (n_image_disblocks = 3; 4 at 128²).
        num_clusters: size of the cluster one-hot joined to the code (0: none).
        input_channels: image channels.
        max_filters: channel cap (official 512); default 8·base_filters.
        spectral_normalization: wrap every conv and the CBIN dense layers in
            `SpectralNormalization`.
        **kwargs: `keras.Model` arguments.

    References:
        DMIT `models/modules/network.py` (`MultiStyleDiscriminator`, `StyleDiscriminator`,
        `ConDownResidualBlock`).
    """

    def __init__(self, label_dim=4, num_scales=2, base_filters=64, num_blocks=3, num_clusters=0,
                 input_channels=3, max_filters=None, spectral_normalization=True, **kwargs):
        label_dim = _positive_int(label_dim, "label_dim")
        num_scales = _positive_int(num_scales, "num_scales")
        base_filters = _positive_int(base_filters, "base_filters")
        num_blocks = _positive_int(num_blocks, "num_blocks")
        num_clusters = _positive_int(num_clusters, "num_clusters", 0)
        input_channels = _positive_int(input_channels, "input_channels")
        max_filters = _positive_int(
            8 * base_filters if max_filters is None else max_filters, "max_filters")

        inputs = {"image": keras.Input((None, None, input_channels), name="image"),
                  "label": keras.Input((label_dim,), name="label")}
        code = inputs["label"]
        if num_clusters:
            inputs["cluster_onehot"] = keras.Input((num_clusters,), name="cluster_onehot")
            code = keras.layers.Concatenate(name="code")([code, inputs["cluster_onehot"]])
        x = inputs["image"]
        outputs = []
        for scale in range(num_scales):
            if scale > 0:
                x = PaddedAveragePooling2D(3, 2, 1, name=f"downsample{scale}")(x)
            outputs.append(_style_discriminator(
                x, code, max(1, base_filters // 2 ** scale), num_blocks, max_filters,
                spectral_normalization, prefix=f"s{scale}_"))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.label_dim = label_dim
        self.num_scales = num_scales
        self.base_filters = base_filters
        self.num_blocks = num_blocks
        self.num_clusters = num_clusters
        self.input_channels = input_channels
        self.max_filters = max_filters
        self.spectral_normalization = spectral_mode(spectral_normalization)

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "label_dim": self.label_dim, "num_scales": self.num_scales,
            "base_filters": self.base_filters, "num_blocks": self.num_blocks,
            "num_clusters": self.num_clusters, "input_channels": self.input_channels,
            "max_filters": self.max_filters,
            "spectral_normalization": self.spectral_normalization,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ContentDiscriminator(keras.Model):
    """DMIT's content discriminator D_c: a label-conditional `StyleDiscriminator` on content.

    Inputs (a dict): "content" [N, h, w, content_channels], "label" [N, label_dim]. Output: one
    logit map [N, h', w', 1] (2×2 at 256² images; LSGAN). The head has `base_filters`
    channels (the official ndf = the content channels, 256), the blocks double them up to
    `max_filters` (official 512). Trained with real = (content, source label) and fake = (the
    SAME content, target label), as DMIT's `models/base_model.py`, so it learns whether a content tensor
    still tells its domain apart, and the encoder learns to hide it.

    Args:
        label_dim: size of the domain label vector.
        content_channels: channels of the content tensor (256).
        num_blocks: 1 + CBIN residual blocks (n_content_disblocks = 5).
        base_filters: head channels; default `content_channels`.
        max_filters: channel cap; default 2·base_filters.
        spectral_normalization: wrap every conv and the CBIN dense layers in
            `SpectralNormalization`.
        **kwargs: `keras.Model` arguments.

    References:
        DMIT `models/modules/network.py` (`get_content_discriminator`, `StyleDiscriminator`).
    """

    def __init__(self, label_dim=4, content_channels=256, num_blocks=5, base_filters=None,
                 max_filters=None, spectral_normalization=True, **kwargs):
        label_dim = _positive_int(label_dim, "label_dim")
        content_channels = _positive_int(content_channels, "content_channels")
        num_blocks = _positive_int(num_blocks, "num_blocks")
        base_filters = _positive_int(
            content_channels if base_filters is None else base_filters, "base_filters")
        max_filters = _positive_int(
            2 * base_filters if max_filters is None else max_filters, "max_filters")

        inputs = {"content": keras.Input((None, None, content_channels), name="content"),
                  "label": keras.Input((label_dim,), name="label")}
        logits = _style_discriminator(inputs["content"], inputs["label"], base_filters,
                                      num_blocks, max_filters, spectral_normalization, prefix="")
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.label_dim = label_dim
        self.content_channels = content_channels
        self.num_blocks = num_blocks
        self.base_filters = base_filters
        self.max_filters = max_filters
        self.spectral_normalization = spectral_mode(spectral_normalization)

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "label_dim": self.label_dim, "content_channels": self.content_channels,
            "num_blocks": self.num_blocks, "base_filters": self.base_filters,
            "max_filters": self.max_filters,
            "spectral_normalization": self.spectral_normalization,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ---------------------------------------------------------------------------------------------
# Building at given widths
# ---------------------------------------------------------------------------------------------


def build_networks(label_dim=4, style_dim=8, base_filters=64, num_downsampling=2,
                   content_residual_blocks=4, style_blocks=4, decoder_residual_blocks=6,
                   num_scales=2, image_d_blocks=3, content_d_blocks=5, num_clusters=0,
                   up_type="transpose", dropout_rate=0.0, share_discriminator=False,
                   image_channels=3, spectral_normalization=True,
                   generator_spectral_normalization=None, style_normalization="instance",
                   norm_type="cbin"):
    """Builds every DMIT network at the given widths (defaults: the official/paper ones).

    Weight initialisation draws from Keras's global seed: call
    `keras.utils.set_random_seed(seed)` first for reproducible weights.

    Args:
        label_dim: size of the domain label vector (4: popularity × modality one-hots).
        style_dim: style code size (8).
        base_filters: nef = ndf (64).
        num_downsampling: content encoder stride-2 convs = decoder up-sampling blocks (2).
        content_residual_blocks: content encoder residual blocks (4).
        style_blocks: style encoder blocks (4).
        decoder_residual_blocks: decoder CBIN residual blocks (6).
        num_scales: image discriminator scales (2).
        image_d_blocks: image discriminator blocks per scale (3).
        content_d_blocks: content discriminator blocks (5).
        num_clusters: cluster one-hot size for the generator and image discriminators (0).
        up_type: decoder up-sampling, "transpose" or "nearest".
        dropout_rate: decoder residual-block dropout (0; the seasons script uses 0.5).
        share_discriminator: one image discriminator for prior- and encoded-style fakes
            (`--use_same_dis`); "encoded_discriminator" is then None.
        image_channels: image channels (3).
        spectral_normalization: spectral normalisation of the discriminators, and of the
            encoders and decoder unless `generator_spectral_normalization` is given: "keras",
            "pytorch" or "none" (`pop_tf.layers.spectral`; DMIT: PyTorch's, everywhere).
        generator_spectral_normalization: the same for the encoders and the decoder.
        style_normalization: the style encoder's normalisation, "instance" (DMIT) or None.
        norm_type: the decoder's conditional normalisation, "cbin" (DMIT) or "adain".

    Returns:
        Dict with "content_encoder", "style_encoder", "generator", "content_discriminator",
        "prior_discriminator" and "encoded_discriminator" (None when shared).
    """
    sn = dict(spectral_normalization=spectral_normalization)
    g_sn = dict(spectral_normalization=spectral_normalization
                if generator_spectral_normalization is None else generator_spectral_normalization)
    content_encoder = ContentEncoder(base_filters, num_downsampling, content_residual_blocks,
                                     input_channels=image_channels, name="content_encoder", **g_sn)
    channels = content_encoder.content_channels
    networks = {
        "content_encoder": content_encoder,
        "style_encoder": StyleEncoder(style_dim, base_filters, style_blocks,
                                      input_channels=image_channels, name="style_encoder",
                                      normalization=style_normalization, **g_sn),
        "generator": Generator(label_dim, style_dim, num_clusters, channels,
                               decoder_residual_blocks, num_downsampling, image_channels,
                               up_type=up_type, dropout_rate=dropout_rate, norm_type=norm_type,
                               name="generator", **g_sn),
        "content_discriminator": ContentDiscriminator(label_dim, channels, content_d_blocks,
                                                      name="content_discriminator", **sn),
    }
    image_d = dict(label_dim=label_dim, num_scales=num_scales, base_filters=base_filters,
                   num_blocks=image_d_blocks, num_clusters=num_clusters,
                   input_channels=image_channels, **sn)
    networks["prior_discriminator"] = ImageDiscriminator(name="prior_discriminator", **image_d)
    networks["encoded_discriminator"] = None if share_discriminator else ImageDiscriminator(
        name="encoded_discriminator", **image_d)
    return networks


def parameter_counts(image_size=256, **widths):
    """Trainable parameters of each DMIT network at the given widths (default: paper widths).

    Every network is fully convolutional (the style encoder ends in a global pool), so the
    counts do not depend on the image size; `image_size` is checked to be large enough for
    every discriminator and divisible by the down-sampling. Spectral normalisation's
    power-iteration vectors are not trainable and not counted (PyTorch keeps them as buffers).

    Args:
        image_size: S of the S×S images the networks are meant for.
        **widths: `build_networks` arguments (base_filters, style_dim, label_dim, ...).

    Returns:
        Dict network name → int (the encoded discriminator is absent when
        `share_discriminator=True`), plus "total".
    """
    image_size = _positive_int(image_size, "image_size")
    networks = build_networks(**widths)
    num_downsampling = widths.get("num_downsampling", 2)
    if image_size % (2 ** num_downsampling):
        raise ValueError(
            f"image_size ({image_size}) must be divisible by 2^num_downsampling = "
            f"{2 ** num_downsampling}.")
    patches = image_patch_sizes(image_size, widths.get("num_scales", 2),
                                widths.get("image_d_blocks", 3))
    content_patch = content_patch_size(image_size, num_downsampling,
                                       widths.get("content_d_blocks", 5))
    if min(patches) < 1 or content_patch < 1:
        raise ValueError(
            f"image_size {image_size} is too small for the discriminators (image patch sizes "
            f"{patches}, content patch size {content_patch}); lower image_d_blocks, num_scales "
            "or content_d_blocks.")
    counts = {}
    for name, network in networks.items():
        if network is not None:
            counts[name] = int(sum(int(np.prod(v.shape)) for v in network.trainable_variables))
    counts["total"] = sum(counts.values())
    return counts


def main(argv=None) -> int:
    """`python -m pop_tf.models.dmit [--preset paper|demo|FILE] [--set k=v]`: parameter counts per network."""
    import argparse

    from pop_tf import config as config_lib
    from pop_tf import data

    parser = argparse.ArgumentParser(prog="python -m pop_tf.models.dmit",
                                     description="Trainable parameters of each DMIT network of a translator config.")
    parser.add_argument("--preset", default="paper", help="demo, paper (default) or a JSON file of overrides")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    config = config_lib.resolve(args.preset, args.sets, default_section="train_translator")
    cfg = config.train_translator
    counts = parameter_counts(
        cfg.image_size, label_dim=data.LABEL_DIM, style_dim=cfg.style_dim, base_filters=cfg.base_filters,
        num_downsampling=cfg.num_downsampling, content_residual_blocks=cfg.content_residual_blocks,
        style_blocks=cfg.style_blocks, decoder_residual_blocks=cfg.decoder_residual_blocks,
        num_scales=cfg.num_scales, image_d_blocks=cfg.image_d_blocks, content_d_blocks=cfg.content_d_blocks,
        up_type=cfg.up_type, share_discriminator=cfg.share_discriminator,
        num_clusters=config.cluster.num_clusters if cfg.diversity == "clusters" else 0)
    print(f"DMIT at {cfg.image_size}×{cfg.image_size}, base_filters {cfg.base_filters} ({args.preset} preset)")
    for name, count in counts.items():
        print(f"{name:>24s} {count:>12,d}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
