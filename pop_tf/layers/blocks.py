"""Spectrally normalised building blocks shared by the DMIT and pix2pix networks (channels-last).

Every convolution, transposed convolution and dense layer made here is wrapped in
`keras.layers.SpectralNormalization` (DMIT wraps every one in `spectral_norm`) and initialised
N(0, 0.02) with zero biases (DMIT's `--init_type normal`, pix2pix's default). Blocks apply
padding → conv → norm → activation in that order, as DMIT's `Conv2dBlock` does.

Spectral normalisation in Keras differs from PyTorch's in two ways worth knowing:
- In training mode the wrapper divides the kernel by its estimated largest singular value and
  WRITES the result back into the kernel variable (and updates its power-iteration vector `u`);
  gradients then flow to the normalised kernel, not through σ. Calling a network with
  `training=True` therefore changes its variables even without an optimizer step, so a GAN
  trainer calls the network it is not updating with `training=False`.
- The kernel is reshaped to [-1, last_axis] before the power iteration. For a transposed conv
  (kernel [h, w, out, in]) that is the input-channel axis, where PyTorch uses the output one;
  the estimate differs slightly, the constraint (σ ≈ 1) is the same.

Block names follow DMIT's modules (`Conv2dBlock`, `TrConv2dBlock`, `ResidualBlock`,
`ConResidualBlock`, `DownResidualBlock`, `ConDownResidualBlock`); a `conditional=True` flag
replaces the separate "Con" classes.
"""

import keras
from keras import ops

from pop_tf.layers.normalization import (
    AdaptiveInstanceNorm,
    CentralBiasingInstanceNorm,
    InstanceNormalization,
    LayerNormalization,
)
from pop_tf.layers import spectral
from pop_tf.layers.padding import ReflectionPadding2D
from pop_tf.layers.spectral import spectral_mode

PACKAGE = "pop_tf"
NORMALIZATIONS = ("instance", "layer", None)
PAD_TYPES = ("reflect", "zero")
# How a code conditions a normalisation: DMIT's `--norm_type` cbin (bias only) or adain.
CONDITIONAL_NORMS = {"cbin": CentralBiasingInstanceNorm, "adain": AdaptiveInstanceNorm}


def normal_initializer(stddev=0.02):
    """N(0, stddev) kernel initializer (DMIT `--init_type normal`, pix2pix default)."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=stddev)


def _maybe_spectral(layer, spectral_normalization):
    return spectral.wrap(layer, spectral_normalization)


def spectral_conv2d(filters, kernel_size, strides=1, padding="valid", use_bias=True,
                    spectral_normalization=True, name=None):
    """A `Conv2D` with N(0, 0.02) init, wrapped in `SpectralNormalization` by default.

    Args:
        filters: output channels.
        kernel_size: int or pair.
        strides: int or pair.
        padding: "valid" or "same" (use a padding layer in front for PyTorch-style padding).
        use_bias: add a bias (initialised to 0).
        spectral_normalization: wrap the layer in `keras.layers.SpectralNormalization`.
        name: name of the inner conv layer.

    Returns:
        A Keras layer.

    References:
        Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018.
    """
    conv = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
        kernel_initializer=normal_initializer(), bias_initializer="zeros", name=name)
    return _maybe_spectral(conv, spectral_normalization)


def spectral_conv2d_transpose(filters, kernel_size=4, strides=2, padding="same", use_bias=True,
                              spectral_normalization=True, name=None):
    """A `Conv2DTranspose` with N(0, 0.02) init, wrapped in `SpectralNormalization` by default.

    With the defaults (kernel 4, stride 2, "same") the output is exactly twice the input size
    and aligned as PyTorch's `ConvTranspose2d(kernel_size=4, stride=2, padding=1)`.

    Args:
        filters: output channels.
        kernel_size: int or pair.
        strides: int or pair.
        padding: "same" or "valid".
        use_bias: add a bias (initialised to 0).
        spectral_normalization: wrap the layer in `keras.layers.SpectralNormalization`.
        name: name of the inner layer.

    Returns:
        A Keras layer.

    References:
        Miyato et al., ICLR 2018; DMIT `TrConv2dBlock`; pix2pix/BicycleGAN `upsampleLayer`.
    """
    conv = keras.layers.Conv2DTranspose(
        filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
        kernel_initializer=normal_initializer(), bias_initializer="zeros", name=name)
    return _maybe_spectral(conv, spectral_normalization)


def spectral_dense(units, use_bias=True, spectral_normalization=True, name=None):
    """A `Dense` layer with N(0, 0.02) init, wrapped in `SpectralNormalization` by default.

    Args:
        units: output size.
        use_bias: add a bias (initialised to 0).
        spectral_normalization: wrap the layer in `keras.layers.SpectralNormalization`.
        name: name of the inner layer.

    Returns:
        A Keras layer.

    References:
        Miyato et al., ICLR 2018; DMIT style encoder (`fc`, `fcVar`).
    """
    dense = keras.layers.Dense(
        units, use_bias=use_bias, kernel_initializer=normal_initializer(),
        bias_initializer="zeros", name=name)
    return _maybe_spectral(dense, spectral_normalization)


def make_activation(activation, name=None):
    """A Keras layer for "lrelu" (LeakyReLU 0.2, as DMIT and pix2pix use), any Keras activation
    name ("relu", "tanh", ...) or None (identity).

    Args:
        activation: "lrelu", a Keras activation name, or None.
        name: layer name.

    Returns:
        A Keras layer.
    """
    if activation is None:
        return keras.layers.Identity(name=name)
    if activation == "lrelu":
        return keras.layers.LeakyReLU(negative_slope=0.2, name=name)
    return keras.layers.Activation(activation, name=name)


def make_normalization(normalization, name=None):
    """The layer for "instance" (`InstanceNormalization`), "layer" (DMIT's `LayerNormalization`)
    or None (identity).

    Args:
        normalization: "instance", "layer" or None.
        name: layer name.

    Returns:
        A Keras layer.
    """
    if normalization == "instance":
        return InstanceNormalization(name=name)
    if normalization == "layer":
        return LayerNormalization(name=name)
    if normalization is None:
        return keras.layers.Identity(name=name)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")


def _check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _build_chain(layers, shape):
    """Builds `layers` in sequence from `shape`; returns the final output shape."""
    shape = tuple(shape)
    for layer in layers:
        layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def _is_shape_list(shape):
    return (isinstance(shape, (list, tuple)) and len(shape) == 2
            and all(isinstance(s, (list, tuple)) for s in shape))


def _split_shapes(input_shape, conditional, layer_name):
    """(x_shape, code_shape or None) from a build shape, checked against `conditional`."""
    if conditional != _is_shape_list(input_shape):
        raise ValueError(
            f"{layer_name} with conditional={conditional} must be called on "
            f"{'a list [x, code]' if conditional else 'one tensor, not a list'}; got input "
            f"shape {input_shape}.")
    if conditional:
        return tuple(input_shape[0]), tuple(input_shape[1])
    return tuple(input_shape), None


def _split_conditional(inputs, conditional, layer_name):
    if conditional:
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(
                f"{layer_name} with conditional=True must be called on a list [x, code].")
        return inputs[0], inputs[1]
    if isinstance(inputs, (list, tuple)):
        raise ValueError(
            f"{layer_name} with conditional=False must be called on one tensor, not a list.")
    return inputs, None


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock(keras.layers.Layer):
    """Padding → spectrally normalised conv → normalisation → activation.

    Args:
        filters: output channels.
        kernel_size: int.
        strides: int.
        padding: pixels of padding on every side (PyTorch's `padding`), applied by a padding
            layer so that "valid" convolution follows.
        pad_type: "reflect" or "zero".
        use_bias: conv bias.
        normalization: "instance", "layer" or None.
        activation: "lrelu", a Keras activation name, or None.
        spectral_normalization: wrap the conv in `SpectralNormalization`.
        **kwargs: base `keras.layers.Layer` arguments.

    References:
        DMIT `models/modules/network.py` (`Conv2dBlock`).
    """

    def __init__(self, filters, kernel_size=3, strides=1, padding=0, pad_type="zero",
                 use_bias=True, normalization=None, activation=None,
                 spectral_normalization=True, **kwargs):
        super().__init__(**kwargs)
        _check_choice(pad_type, PAD_TYPES, "pad_type")
        _check_choice(normalization, NORMALIZATIONS, "normalization")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = int(padding)
        self.pad_type = pad_type
        self.use_bias = bool(use_bias)
        self.normalization = normalization
        self.activation = activation
        self.spectral_normalization = spectral_mode(spectral_normalization)
        if padding == 0:
            self.pad = keras.layers.Identity(name="pad")
        elif pad_type == "reflect":
            self.pad = ReflectionPadding2D(padding, name="pad")
        else:
            self.pad = keras.layers.ZeroPadding2D(padding, name="pad")
        self.conv = spectral_conv2d(
            filters, kernel_size, strides=strides, use_bias=use_bias,
            spectral_normalization=spectral_normalization, name="conv")
        self.norm = make_normalization(normalization, name="norm")
        self.act = make_activation(activation, name="act")

    def build(self, input_shape):
        _build_chain([self.pad, self.conv, self.norm, self.act], input_shape)

    def call(self, inputs):
        return self.act(self.norm(self.conv(self.pad(inputs))))

    def compute_output_shape(self, input_shape):
        shape = self.pad.compute_output_shape(input_shape)
        return self.conv.compute_output_shape(shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
            "padding": self.padding, "pad_type": self.pad_type, "use_bias": self.use_bias,
            "normalization": self.normalization, "activation": self.activation,
            "spectral_normalization": self.spectral_normalization,
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvTransposeBlock(keras.layers.Layer):
    """Spectrally normalised transposed conv ("same" padding) → normalisation → activation.

    The default (kernel 4, stride 2) doubles the spatial size like PyTorch's
    `ConvTranspose2d(k=4, s=2, p=1)`, DMIT's `transpose` up-sampling and pix2pix's `basic` one.

    Args:
        filters: output channels.
        kernel_size: int.
        strides: int.
        use_bias: conv bias.
        normalization: "instance", "layer" or None.
        activation: "lrelu", a Keras activation name, or None.
        spectral_normalization: wrap the conv in `SpectralNormalization`.
        **kwargs: base `keras.layers.Layer` arguments.

    References:
        DMIT `TrConv2dBlock` / `Upsampling2dBlock`; BicycleGAN `upsampleLayer('basic')`.
    """

    def __init__(self, filters, kernel_size=4, strides=2, use_bias=True, normalization=None,
                 activation=None, spectral_normalization=True, **kwargs):
        super().__init__(**kwargs)
        _check_choice(normalization, NORMALIZATIONS, "normalization")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.use_bias = bool(use_bias)
        self.normalization = normalization
        self.activation = activation
        self.spectral_normalization = spectral_mode(spectral_normalization)
        self.conv = spectral_conv2d_transpose(
            filters, kernel_size, strides=strides, use_bias=use_bias,
            spectral_normalization=spectral_normalization, name="conv_transpose")
        self.norm = make_normalization(normalization, name="norm")
        self.act = make_activation(activation, name="act")

    def build(self, input_shape):
        _build_chain([self.conv, self.norm, self.act], input_shape)

    def call(self, inputs):
        return self.act(self.norm(self.conv(inputs)))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
            "use_bias": self.use_bias, "normalization": self.normalization,
            "activation": self.activation,
            "spectral_normalization": self.spectral_normalization,
        })
        return config


UP_TYPES = ("transpose", "nearest")


def upsample(x, filters, up_type="transpose", use_bias=True, normalization=None,
             activation=None, spectral_normalization=True, name="up"):
    """Doubles the spatial size of a symbolic tensor and maps it to `filters` channels.

    "transpose" is a 4×4/2 transposed conv (DMIT's default `--up_type`, BicycleGAN's "basic");
    "nearest" is nearest-neighbour ×2 then a 3×3 conv with reflection padding (BicycleGAN's
    "nearest", DMIT's `--up_type nearest`). The transposed conv's kernel overlaps unevenly at
    stride 2, so each output pixel parity is made by different taps: early in training that is a
    per-pixel checkerboard (Odena, Dumoulin, Olah, "Deconvolution and Checkerboard Artifacts",
    Distill 2016), which the resize-then-conv path cannot produce.

    Args:
        x: a symbolic [N, H, W, C] tensor.
        filters: output channels.
        up_type: "transpose" or "nearest".
        use_bias: conv bias.
        normalization: "instance", "layer" or None.
        activation: "lrelu", a Keras activation name, or None.
        spectral_normalization: wrap the conv in `SpectralNormalization`.
        name: the block's name ("<name>_x2" names the resize of "nearest").

    Returns:
        The symbolic [N, 2H, 2W, filters] output.
    """
    _check_choice(up_type, UP_TYPES, "up_type")
    common = dict(use_bias=use_bias, normalization=normalization,
                  activation=activation, spectral_normalization=spectral_normalization,
                  name=name)
    if up_type == "transpose":
        return ConvTransposeBlock(filters, 4, strides=2, **common)(x)
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_x2")(x)
    return ConvBlock(filters, 3, padding=1, pad_type="reflect", **common)(x)


def _norm_layer(conditional, normalization, spectral_normalization, name, conditional_norm="cbin"):
    if conditional:
        return CONDITIONAL_NORMS[conditional_norm](
            spectral_normalization=spectral_normalization, name=name)
    return make_normalization(normalization, name=name)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(keras.layers.Layer):
    """x + [conv3×3 → norm → act → conv3×3 → norm (→ dropout)], channels kept.

    The convs use reflection padding and no bias (DMIT's `conv3x3`). With `conditional=True`
    both norms are CBIN and the block is called on `[x, code]` (DMIT's decoder
    `ConResidualBlock`); otherwise it is called on x (the content encoder's `ResidualBlock`).

    Args:
        conditional: normalise conditioned on a code (`conditional_norm`).
        normalization: "instance", "layer" or None when not conditional.
        activation: "lrelu" (DMIT encoders), "relu" (DMIT decoder), any Keras name or None.
        dropout_rate: dropout after the second norm (DMIT `--use_dropout` uses 0.5).
        conditional_norm: "cbin" (`CentralBiasingInstanceNorm`, DMIT's default) or "adain"
            (`AdaptiveInstanceNorm`).
        pad_type: "reflect" or "zero".
        spectral_normalization: wrap the convs (and the CBIN dense) in `SpectralNormalization`.
        **kwargs: base `keras.layers.Layer` arguments.

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; DMIT
        `ResidualBlock`, `ConResidualBlock`.
    """

    def __init__(self, conditional=False, normalization="instance", activation="lrelu",
                 dropout_rate=0.0, pad_type="reflect", spectral_normalization=True,
                 conditional_norm="cbin", **kwargs):
        super().__init__(**kwargs)
        _check_choice(normalization, NORMALIZATIONS, "normalization")
        _check_choice(pad_type, PAD_TYPES, "pad_type")
        _check_choice(conditional_norm, tuple(CONDITIONAL_NORMS), "conditional_norm")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}.")
        self.conditional = bool(conditional)
        self.normalization = normalization
        self.activation = activation
        self.dropout_rate = float(dropout_rate)
        self.pad_type = pad_type
        self.spectral_normalization = spectral_mode(spectral_normalization)
        self.conditional_norm = conditional_norm
        self.norm1, self.norm2 = (
            _norm_layer(conditional, normalization, spectral_normalization, name, conditional_norm)
            for name in ("norm1", "norm2"))
        self.act = make_activation(activation, name="act")
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.conv1 = None
        self.conv2 = None

    def build(self, input_shape):
        x_shape, code_shape = _split_shapes(input_shape, self.conditional, "ResidualBlock")
        channels = x_shape[-1]
        self.conv1, self.conv2 = (
            ConvBlock(channels, 3, padding=1, pad_type=self.pad_type, use_bias=False,
                      spectral_normalization=self.spectral_normalization, name=name)
            for name in ("conv1", "conv2"))
        self.conv1.build(x_shape)
        self.conv2.build(x_shape)
        for norm in (self.norm1, self.norm2):
            norm.build([x_shape, code_shape] if self.conditional else x_shape)

    def _norm(self, norm, x, code):
        return norm([x, code]) if self.conditional else norm(x)

    def call(self, inputs):
        x, code = _split_conditional(inputs, self.conditional, "ResidualBlock")
        y = self.act(self._norm(self.norm1, self.conv1(x), code))
        y = self._norm(self.norm2, self.conv2(y), code)
        return x + self.dropout(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if self.conditional else input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "conditional": self.conditional, "normalization": self.normalization,
            "activation": self.activation, "dropout_rate": self.dropout_rate,
            "pad_type": self.pad_type, "spectral_normalization": self.spectral_normalization,
            "conditional_norm": self.conditional_norm,
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class DownResidualBlock(keras.layers.Layer):
    """Pre-activation residual block that halves the size and maps channels C_in → `filters`.

    Main path: norm → act → conv3×3 (C_in) → norm → act → conv3×3 (filters) → avg-pool /2.
    Shortcut: avg-pool /2 → 1×1 conv with bias. The 3×3 convs use reflection padding and no
    bias. With `conditional=True` both norms are CBIN and the block is called on `[x, code]`
    (DMIT's discriminator `ConDownResidualBlock`); otherwise on x (the style encoder's
    `DownResidualBlock`).

    Args:
        filters: output channels.
        conditional: use `CentralBiasingInstanceNorm` conditioned on a code.
        normalization: "instance", "layer" or None when not conditional.
        activation: "lrelu", a Keras activation name, or None.
        spectral_normalization: wrap the convs (and the CBIN dense) in `SpectralNormalization`.
        **kwargs: base `keras.layers.Layer` arguments.

    References:
        DMIT `DownResidualBlock`, `ConDownResidualBlock`; Miyato & Koyama, "cGANs with
        Projection Discriminator", ICLR 2018 (this residual down-sampling design).
    """

    def __init__(self, filters, conditional=False, normalization="instance", activation="lrelu",
                 spectral_normalization=True, **kwargs):
        super().__init__(**kwargs)
        _check_choice(normalization, NORMALIZATIONS, "normalization")
        self.filters = int(filters)
        self.conditional = bool(conditional)
        self.normalization = normalization
        self.activation = activation
        self.spectral_normalization = spectral_mode(spectral_normalization)
        self.norm1 = _norm_layer(conditional, normalization, spectral_normalization, "norm1")
        self.norm2 = _norm_layer(conditional, normalization, spectral_normalization, "norm2")
        self.act1 = make_activation(activation, name="act1")
        self.act2 = make_activation(activation, name="act2")
        self.conv2 = ConvBlock(filters, 3, padding=1, pad_type="reflect", use_bias=False,
                               spectral_normalization=spectral_normalization, name="conv2")
        self.pool = keras.layers.AveragePooling2D(2, name="pool")
        self.shortcut_pool = keras.layers.AveragePooling2D(2, name="shortcut_pool")
        self.shortcut_conv = ConvBlock(filters, 1, use_bias=True,
                                       spectral_normalization=spectral_normalization,
                                       name="shortcut_conv")
        self.conv1 = None

    def build(self, input_shape):
        x_shape, code_shape = _split_shapes(input_shape, self.conditional, "DownResidualBlock")
        self.conv1 = ConvBlock(x_shape[-1], 3, padding=1, pad_type="reflect", use_bias=False,
                               spectral_normalization=self.spectral_normalization, name="conv1")
        for norm in (self.norm1, self.norm2):
            norm.build([x_shape, code_shape] if self.conditional else x_shape)
        self.conv1.build(x_shape)
        _build_chain([self.conv2, self.pool], x_shape)
        _build_chain([self.shortcut_pool, self.shortcut_conv], x_shape)

    def _norm(self, norm, x, code):
        return norm([x, code]) if self.conditional else norm(x)

    def call(self, inputs):
        x, code = _split_conditional(inputs, self.conditional, "DownResidualBlock")
        y = self.conv1(self.act1(self._norm(self.norm1, x, code)))
        y = self.pool(self.conv2(self.act2(self._norm(self.norm2, y, code))))
        return y + self.shortcut_conv(self.shortcut_pool(x))

    def compute_output_shape(self, input_shape):
        x_shape = tuple(input_shape[0] if self.conditional else input_shape)
        return self.shortcut_conv.compute_output_shape(
            self.shortcut_pool.compute_output_shape(x_shape))

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters, "conditional": self.conditional,
            "normalization": self.normalization, "activation": self.activation,
            "spectral_normalization": self.spectral_normalization,
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpatialBroadcastConcat(keras.layers.Layer):
    """Concatenates a vector, tiled over every pixel, to a feature map: [x, v] → [N, H, W, C+D].

    How pix2pix/BicycleGAN inject z (`G_Unet_add_all`: at every encoder layer) and how MSGAN's
    conditional models feed a one-hot label to D.

    Call it on a list `[x, v]` with x [N, H, W, C] and v [N, D].

    Args:
        **kwargs: base `keras.layers.Layer` arguments.

    References:
        Zhu et al., "Toward Multimodal Image-to-Image Translation" (BicycleGAN), NeurIPS 2017.
    """

    def call(self, inputs):
        x, vector = inputs
        vector = ops.cast(vector, x.dtype)
        shape = ops.shape(x)
        tiled = ops.broadcast_to(vector[:, None, None, :],
                                 (shape[0], shape[1], shape[2], ops.shape(vector)[-1]))
        return ops.concatenate([x, tiled], axis=-1)

    def compute_output_shape(self, input_shape):
        x_shape, v_shape = input_shape
        channels = None if x_shape[-1] is None or v_shape[-1] is None else (
            x_shape[-1] + v_shape[-1])
        return tuple(x_shape[:-1]) + (channels,)
