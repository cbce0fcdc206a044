"""Spectral normalisation in two semantics: Keras's projection and PyTorch's reparameterisation.

Both divide a layer's kernel by an estimate σ of its largest singular value (one power
iteration a training call), and both keep σ ≈ 1. They differ in what the optimizer sees:

- "keras" (`keras.layers.SpectralNormalization`): in training mode the wrapper WRITES W/σ back
  into the kernel variable, then the layer runs on it. The gradient reaches the normalised
  kernel and never flows through σ; the optimizer steps a kernel that the next training call
  projects back onto σ = 1.
- "pytorch" (`torch.nn.utils.spectral_norm`, which DMIT uses on every layer): the variable
  holds an unconstrained W and the layer runs on W/σ(W) computed in the forward pass, with the
  power-iteration vectors held constant, so the gradient flows through σ too. The weight is
  never rewritten, so calling a network in training mode changes nothing but the vector u.

`spectral_normalization` arguments across pop_tf's layers and networks take "keras",
"pytorch" or "none" (True means "keras" and False "none", as before the choice existed).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

PACKAGE = "pop_tf"
SPECTRAL_NORMS = ("keras", "pytorch", "none")
# Power iterations on the initial kernel when a layer is built (PyTorch's first training call
# does one from a random u; pop_tf's trainers may run inference before any training call).
INITIAL_POWER_ITERATIONS = 20


def spectral_mode(value):
    """The semantics named by a `spectral_normalization` argument: "keras", "pytorch" or "none"."""
    if value is True:
        return "keras"
    if value is False or value is None:
        return "none"
    if value not in SPECTRAL_NORMS:
        raise ValueError(
            f"spectral_normalization must be one of {SPECTRAL_NORMS} (or a bool), got {value!r}.")
    return value


def wrap(layer, spectral_normalization, name=None):
    """`layer` wrapped for the given semantics (unwrapped for "none")."""
    mode = spectral_mode(spectral_normalization)
    name = name or f"sn_{layer.name}"
    if mode == "keras":
        return keras.layers.SpectralNormalization(layer, name=name)
    if mode == "pytorch":
        return SpectralReparameterization(layer, name=name)
    return layer


def _normalize(vector):
    return vector / (ops.sqrt(ops.sum(ops.square(vector))) + 1e-12)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpectralReparameterization(keras.layers.Wrapper):
    """Runs a `Conv2D`, `Conv2DTranspose` or `Dense` on W/σ(W), with the gradient through σ.

    PyTorch's `spectral_norm`: the kernel is viewed as a matrix with one column per output
    channel (PyTorch's `dim=0` for convs and linear layers, `dim=1` for transposed convs), σ is
    estimated as vᵀ·M·u with the power-iteration vectors u (kept, not trained) and v held
    constant in the gradient, and u advances one power iteration per training call. An
    inference call runs the same iteration from the stored u without storing the result, and u
    starts converged on the initial kernel: a trainer that calls a network in inference mode
    before its first training call (DMIT's trainer makes the discriminators' fakes that way)
    would otherwise divide by a σ estimated from a random u, far below the true one, and one
    layer's inflated output compounds through the next (a style encoder's log-variance of
    several hundred, and an infinite style, in the first step).

    Args:
        layer: a `keras.layers.Conv2D`, `Conv2DTranspose` or `Dense`.
        **kwargs: base `keras.layers.Layer` arguments.

    References:
        Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018;
        PyTorch `torch/nn/utils/spectral_norm.py`.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(layer, **kwargs)
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose,
                                  keras.layers.Dense)):
            raise ValueError(
                "SpectralReparameterization wraps Conv2D, Conv2DTranspose or Dense layers, got "
                f"{type(layer).__name__}.")
        self.vector_u = None

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.vector_u = self.add_weight(
            shape=(self._output_axis_size(),), initializer=keras.initializers.RandomNormal(),
            trainable=False, name="vector_u", aggregation="only_first_replica")
        if tf.executing_eagerly():
            matrix = np.asarray(self._matrix(ops.convert_to_tensor(self.layer.kernel)), np.float64)
            u = np.asarray(self.vector_u, np.float64)
            for _ in range(INITIAL_POWER_ITERATIONS):
                v = matrix @ u
                u = matrix.T @ (v / (np.linalg.norm(v) + 1e-12))
                u = u / (np.linalg.norm(u) + 1e-12)
            self.vector_u.assign(u.astype(np.float32))
        self.built = True

    def _output_axis_size(self):
        kernel_shape = self.layer.kernel.shape
        # Conv2DTranspose kernels are [h, w, out, in]; the others end with the output axis.
        return kernel_shape[-2] if isinstance(self.layer, keras.layers.Conv2DTranspose) else (
            kernel_shape[-1])

    def _matrix(self, kernel):
        """The kernel as [fan_in, out]: one column per output channel."""
        if isinstance(self.layer, keras.layers.Conv2DTranspose):
            kernel = ops.transpose(kernel, (0, 1, 3, 2))
        return ops.reshape(kernel, (-1, self._output_axis_size()))

    def normalized_kernel(self, training=False):
        """W/σ(W) as a tensor (differentiable in W); advances u when `training`."""
        kernel = self.layer.kernel
        matrix = self._matrix(ops.convert_to_tensor(kernel))
        u = _normalize(ops.convert_to_tensor(self.vector_u))
        v = ops.stop_gradient(_normalize(ops.matmul(matrix, u[:, None])[:, 0]))
        u = ops.stop_gradient(_normalize(ops.matmul(v[None, :], matrix)[0]))
        if training:
            self.vector_u.assign(u)
        sigma = ops.sum(v * ops.matmul(matrix, u[:, None])[:, 0])
        return kernel / ops.cast(sigma, kernel.dtype)

    def call(self, inputs, training=False):
        layer = self.layer
        kernel = ops.cast(self.normalized_kernel(training), self.compute_dtype)
        inputs = ops.cast(inputs, self.compute_dtype)
        if isinstance(layer, keras.layers.Dense):
            outputs = ops.matmul(inputs, kernel)
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            outputs = ops.conv_transpose(
                inputs, kernel, strides=layer.strides, padding=layer.padding,
                output_padding=layer.output_padding, data_format=layer.data_format,
                dilation_rate=layer.dilation_rate)
        else:
            outputs = layer.convolution_op(inputs, kernel)
        if layer.use_bias:
            outputs = outputs + ops.cast(layer.bias, outputs.dtype)
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)
