"""Spectral normalisation with PyTorch's semantics (`pop_tf.layers.spectral`)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pop_tf.layers import ConvBlock, spectral


def _layers():
    return {
        "dense": (keras.layers.Dense(5, name="dense"), (3, 7)),
        "conv": (keras.layers.Conv2D(4, 3, name="conv"), (2, 6, 6, 3)),
        "conv_transpose": (keras.layers.Conv2DTranspose(4, 4, strides=2, padding="same",
                                                        name="conv_transpose"), (2, 5, 5, 3)),
    }


def _largest_singular_value(wrapper, kernel):
    return tf.linalg.svd(wrapper._matrix(kernel), compute_uv=False)[0]


@pytest.mark.parametrize("kind", ["dense", "conv", "conv_transpose"])
def test_training_calls_leave_the_kernel_and_converge_to_sigma_one(kind):
    keras.utils.set_random_seed(0)
    layer, shape = _layers()[kind]
    wrapper = spectral.SpectralReparameterization(layer)
    x = tf.random.normal(shape)
    wrapper(x)
    kernel = np.asarray(layer.kernel).copy()
    u = np.asarray(wrapper.vector_u).copy()
    for _ in range(60):
        wrapper(x, training=True)
    # PyTorch semantics: the weight is never rewritten, only the power-iteration vector moves.
    np.testing.assert_array_equal(np.asarray(layer.kernel), kernel)
    assert not np.allclose(np.asarray(wrapper.vector_u), u)
    normalized = wrapper.normalized_kernel()
    assert float(_largest_singular_value(wrapper, normalized)) == pytest.approx(1.0, abs=1e-3)
    # The forward pass is the plain layer's on W/σ.
    plain = layer.__class__.from_config(layer.get_config())
    plain.build(shape)
    plain.set_weights([np.asarray(normalized), np.asarray(layer.bias)])
    np.testing.assert_allclose(np.asarray(wrapper(x)), np.asarray(plain(x)), atol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "conv_transpose"])
def test_gradient_flows_through_sigma(kind):
    """Once u has converged, d/dW of a loss on W/σ(W) equals that with the exact σ = ‖W‖₂."""
    keras.utils.set_random_seed(1)
    layer, shape = _layers()[kind]
    wrapper = spectral.SpectralReparameterization(layer)
    x = tf.random.normal(shape)
    for _ in range(200):
        wrapper(x, training=True)
    target = tf.random.normal(wrapper(x).shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(wrapper(x) * target)
    got = tape.gradient(loss, layer.kernel)

    def loss_of(kernel, exact_sigma_gradient):
        with tf.GradientTape() as tape:
            sigma = _largest_singular_value(wrapper, kernel)
            if not exact_sigma_gradient:
                sigma = tf.stop_gradient(sigma)
            normalized = kernel / sigma
            if kind == "dense":
                out = tf.matmul(x, normalized) + layer.bias
            else:
                out = tf.nn.conv2d_transpose(x, normalized, layer.compute_output_shape(shape), 2,
                                             padding="SAME") + layer.bias
            loss = tf.reduce_sum(out * target)
        return tape.gradient(loss, kernel)

    kernel = tf.Variable(layer.kernel)
    np.testing.assert_allclose(np.asarray(got), np.asarray(loss_of(kernel, True)), atol=2e-4)
    # With σ held constant in the gradient (Keras's semantics) the gradient is another one.
    assert not np.allclose(np.asarray(got), np.asarray(loss_of(kernel, False)), atol=2e-4)


def test_inference_before_any_training_call_already_divides_by_about_the_true_sigma():
    """DMIT's trainer makes the discriminators' fakes in inference mode before its first update."""
    keras.utils.set_random_seed(2)
    for kind, (layer, shape) in _layers().items():
        wrapper = spectral.SpectralReparameterization(layer)
        wrapper.build(shape)
        normalized = wrapper.normalized_kernel(training=False)
        # Near 1 (20 iterations need not converge fully), where a random u gave σ far too small.
        assert float(_largest_singular_value(wrapper, normalized)) == pytest.approx(1.0, abs=0.1), kind


def test_modes_and_blocks():
    assert spectral.spectral_mode(True) == "keras"
    assert spectral.spectral_mode(False) == "none"
    with pytest.raises(ValueError, match="spectral_normalization"):
        spectral.spectral_mode("torch")
    block = ConvBlock(4, 3, spectral_normalization="pytorch")
    block(tf.zeros([1, 8, 8, 3]))
    assert isinstance(block.conv, spectral.SpectralReparameterization)
    restored = ConvBlock.from_config(block.get_config())
    assert restored.spectral_normalization == "pytorch"
    with pytest.raises(ValueError, match="Conv2D"):
        spectral.SpectralReparameterization(keras.layers.Conv1D(2, 3))
