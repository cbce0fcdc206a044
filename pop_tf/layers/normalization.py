"""Normalisation layers with PyTorch's semantics, for faithful ports of DMIT and pix2pix.

Keras 3 has no instance-norm layer; `GroupNormalization(groups=-1)` computes one but with
epsilon 1e-3 and an affine transform on by default (PyTorch: 1e-5, none), and `LayerNormalization` over
(H, W, C) learns one scale per element instead of one per channel. These layers reproduce the
PyTorch layers the reference code uses. All expect channels-last input.
"""

import keras
from keras import ops

from pop_tf.layers import spectral
from pop_tf.layers.spectral import spectral_mode

PACKAGE = "pop_tf"


def _normal_002():
    # DMIT's `--init_type normal`: N(0, 0.02) for every conv and linear weight.
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


def _normalized(inputs, axes, epsilon):
    """(x − mean) / sqrt(var + epsilon) over `axes`, with the statistics in float32.

    Under a mixed policy x is bfloat16 or float16: a mean over thousands of pixels summed in 8
    (or 11) mantissa bits drifts, a small variance rounds to 0, and x − mean cancels the few
    bits there are. So the whole normalisation runs on a float32 copy; the result is cast back
    to x's dtype, the layer's compute dtype.
    """
    x = ops.cast(inputs, "float32")
    mean, variance = ops.moments(x, axes=axes, keepdims=True)
    return ops.cast((x - mean) * ops.rsqrt(variance + epsilon), inputs.dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class InstanceNormalization(keras.layers.Layer):
    """Instance normalisation: each sample's channels normalised over their spatial axes.

    y = (x − mean) / sqrt(var + epsilon), with the biased variance over every axis except the
    batch and the channel (last) axis, per sample and channel. With the defaults it equals
    PyTorch's `InstanceNorm2d(affine=False, eps=1e-5, track_running_stats=False)`, which DMIT and
    pix2pix use; there are no running statistics, so training and inference agree.

    Args:
        epsilon: added to the variance.
        center: learn a per-channel offset (beta, initialised to 0).
        scale: learn a per-channel scale (gamma, initialised to 1).
        **kwargs: base `keras.layers.Layer` arguments (name, dtype, ...).

    References:
        Ulyanov, Vedaldi, Lempitsky, "Instance Normalization: The Missing Ingredient for Fast
        Stylization", arXiv:1607.08022, 2016.
    """

    def __init__(self, epsilon=1e-5, center=False, scale=False, **kwargs):
        super().__init__(**kwargs)
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}.")
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.gamma = None
        self.beta = None

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(
                f"InstanceNormalization needs inputs with at least one spatial axis "
                f"([N, ..., C]), got shape {input_shape}.")
        channels = input_shape[-1]
        if self.scale:
            self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        if self.center:
            self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, inputs):
        outputs = _normalized(inputs, list(range(1, len(inputs.shape) - 1)), self.epsilon)
        if self.gamma is not None:
            outputs = outputs * ops.cast(self.gamma, outputs.dtype)
        if self.beta is not None:
            outputs = outputs + ops.cast(self.beta, outputs.dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "center": self.center, "scale": self.scale})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class LayerNormalization(keras.layers.Layer):
    """Layer normalisation of a feature map as DMIT's up-sampling blocks use it.

    Each sample is normalised over all of (H, W, C) together (biased variance, epsilon inside
    the square root), then scaled and shifted PER CHANNEL: gamma and beta have shape [C]
    (initialised to 1 and 0). This is DMIT's `LayerNorm` (adapted from MUNIT), i.e. PyTorch
    `F.layer_norm(x, x.shape[1:], weight.expand(...), bias.expand(...))` with per-channel
    weights. `keras.layers.LayerNormalization(axis=[1, 2, 3])` normalises the same way but learns
    a separate gamma and beta for every (h, w, c) element and defaults to epsilon 1e-3, which
    also ties it to one image size; hence this layer.

    Args:
        epsilon: added to the variance.
        affine: learn the per-channel gamma and beta.
        **kwargs: base `keras.layers.Layer` arguments.

    References:
        Ba, Kiros, Hinton, "Layer Normalization", arXiv:1607.06450, 2016; DMIT
        `models/modules/network.py` (`LayerNorm`); Huang et al., "Multimodal Unsupervised
        Image-to-Image Translation" (MUNIT), ECCV 2018.
    """

    def __init__(self, epsilon=1e-5, affine=True, **kwargs):
        super().__init__(**kwargs)
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}.")
        self.epsilon = float(epsilon)
        self.affine = bool(affine)
        self.gamma = None
        self.beta = None

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"LayerNormalization needs inputs of shape [N, ..., C], got {input_shape}.")
        if self.affine:
            channels = input_shape[-1]
            self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, inputs):
        outputs = _normalized(inputs, list(range(1, len(inputs.shape))), self.epsilon)
        if self.affine:
            outputs = outputs * ops.cast(self.gamma, outputs.dtype) + ops.cast(
                self.beta, outputs.dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "affine": self.affine})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class CentralBiasingInstanceNorm(keras.layers.Layer):
    """DMIT's CBIN (Central Biasing Instance Normalisation): IN(x) + tanh(SN-Linear(code)).

    The feature map is instance-normalised without affine parameters, then a per-channel bias
    computed from a condition vector is added (broadcast over space): no scale, only a shift of
    each channel's centre. The linear layer is spectrally normalised and initialised N(0, 0.02),
    as every linear layer in DMIT. DMIT uses it in the decoder (code = concat(domain label,
    style)) and in the discriminators (code = domain label).

    Call it on a list, `layer([x, code])`, with x of shape [N, H, W, C] and code of shape
    [N, code_dim]; a list input (like `keras.layers.Concatenate`) keeps it usable in functional
    models and gives `build` both shapes at once. C is taken from x at build time.

    Args:
        epsilon: added to the variance of the instance norm.
        spectral_normalization: wrap the bias layer in `keras.layers.SpectralNormalization`.
        **kwargs: base `keras.layers.Layer` arguments.

    References:
        Yu, Cai, Ying, Li, "SingleGAN: Image-to-Image Translation by a Single-Generator Network
        using Multiple Generative Adversarial Learning", ACCV 2018, and Yu et al.,
        "Multi-Mapping Image-to-Image Translation with Central Biasing Normalization",
        arXiv:1806.10050 (CBIN); DMIT `models/modules/cbin.py`.
    """

    def __init__(self, epsilon=1e-5, spectral_normalization=True, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.spectral_normalization = spectral_mode(spectral_normalization)
        self.instance_norm = InstanceNormalization(epsilon=epsilon, name="instance_norm")
        self.bias_dense = None

    def _split(self, values, what):
        if not isinstance(values, (list, tuple)) or len(values) != 2:
            raise ValueError(
                f"CentralBiasingInstanceNorm must be called on a list [x, code], got {what} "
                f"{values!r}.")
        return values

    def build(self, input_shape):
        x_shape, code_shape = self._split(input_shape, "input shape")
        dense = keras.layers.Dense(
            x_shape[-1], kernel_initializer=_normal_002(), bias_initializer="zeros",
            name="bias_dense")
        dense = spectral.wrap(dense, self.spectral_normalization, name="sn_bias_dense")
        dense.build(tuple(code_shape))
        self.bias_dense = dense
        self.instance_norm.build(tuple(x_shape))

    def call(self, inputs):
        x, code = self._split(inputs, "inputs")
        # The spectral-norm wrapper picks up `training` from the call context.
        bias = self.bias_dense(code)
        bias = ops.tanh(ops.cast(bias, x.dtype))
        # [N, C] -> [N, 1, ..., 1, C] so that it broadcasts over every spatial axis.
        bias = ops.reshape(bias, (-1,) + (1,) * (len(x.shape) - 2) + (x.shape[-1],))
        return self.instance_norm(x) + bias

    def compute_output_shape(self, input_shape):
        return self._split(input_shape, "input shape")[0]

    def get_config(self):
        config = super().get_config()
        config.update({
            "epsilon": self.epsilon,
            "spectral_normalization": self.spectral_normalization,
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveInstanceNorm(CentralBiasingInstanceNorm):
    """AdaIN conditioned on a code: IN(x)·(1 + SN-Linear_γ(code)) + SN-Linear_β(code).

    DMIT's `--norm_type adain` alternative to CBIN: the code sets each channel's scale as well
    as its centre, so a style can switch content channels off or amplify them instead of only
    shifting them by at most ±1 (CBIN's tanh bias). The scale is written 1 + γ so that, with
    DMIT's N(0, 0.02) initialisation, the layer starts as a plain instance norm (DMIT's literal
    IN·Linear(code) starts near IN·0, i.e. with every channel switched off). Same call contract
    as `CentralBiasingInstanceNorm`: `layer([x, code])`.

    References:
        Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance
        Normalization", ICCV 2017; DMIT `models/modules/adain.py`.
    """

    def __init__(self, epsilon=1e-5, spectral_normalization=True, **kwargs):
        super().__init__(epsilon=epsilon, spectral_normalization=spectral_normalization, **kwargs)
        self.scale_dense = None

    def build(self, input_shape):
        super().build(input_shape)
        x_shape, code_shape = self._split(input_shape, "input shape")
        dense = keras.layers.Dense(
            x_shape[-1], kernel_initializer=_normal_002(), bias_initializer="zeros",
            name="scale_dense")
        dense = spectral.wrap(dense, self.spectral_normalization, name="sn_scale_dense")
        dense.build(tuple(code_shape))
        self.scale_dense = dense

    def call(self, inputs):
        x, code = self._split(inputs, "inputs")
        # [N, C] -> [N, 1, ..., 1, C] so that it broadcasts over every spatial axis.
        per_channel = (-1,) + (1,) * (len(x.shape) - 2) + (x.shape[-1],)
        scale = ops.reshape(ops.cast(self.scale_dense(code), x.dtype), per_channel)
        bias = ops.reshape(ops.cast(self.bias_dense(code), x.dtype), per_channel)
        return self.instance_norm(x) * (1.0 + scale) + bias


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel where it can be.

    Same variables, arguments and results as the Keras layer (batch statistics in training,
    biased variance for the moving average, moving statistics otherwise), but one
    `FusedBatchNormV3` op (oneDNN's batch norm on CPU) instead of Keras's moments plus five
    element-wise ops over float32 copies. Under a mixed policy the kernel takes bfloat16/float16
    activations with float32 statistics and parameters, so nothing is upcast: the ranker's
    ResNet50 train step runs ×1.2 faster in float32 and ×1.8 in bfloat16 with it
    (docs/performance.md). Channels-last 4-D inputs on the TensorFlow backend only; masks,
    renormalisation, synchronised statistics and other layouts fall back to the Keras layer.

    The class keeps Keras's name on purpose: Keras 3 weights files address layers by their
    snake-cased class name, so `.weights.h5` files written with either layer load into both.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) == 4 and self.axis in (3, -1))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        inputs = tf.cast(inputs, self.compute_dtype)
        if training and self.trainable:
            outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
                epsilon=self.epsilon, is_training=True)
            # The kernel returns the unbiased (n−1) variance; Keras's moving average takes the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
            return outputs
        outputs, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
            variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, is_training=False)
        return outputs


def with_fused_batch_norm(model):
    """A copy of a functional `model` whose `keras.layers.BatchNormalization` layers are this
    module's `BatchNormalization` (same names, configs and weights): how keras.applications
    networks, which build Keras's layer internally, get the fused kernel."""
    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
