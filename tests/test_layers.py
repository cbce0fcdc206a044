"""Tests of the reusable GAN layers (pop_tf.layers): numpy references, CBIN, spectral norm,
config round trips."""

import keras
import numpy as np
import pytest

from pop_tf import layers as L


def _rng(seed=0):
    return np.random.default_rng(seed)


def _numpy_instance_norm(x, eps=1e-5):
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)  # biased, as PyTorch's InstanceNorm2d
    return (x - mean) / np.sqrt(var + eps)


def _unwrapped_kernels(model):
    """Names of conv / transposed-conv / dense layers NOT inside a SpectralNormalization."""
    # _flatten_layers is Keras's own recursive walk (it includes each wrapper's inner layer).
    found = list(model._flatten_layers(include_self=False, recursive=True))
    wrapped = {id(layer.layer) for layer in found
               if isinstance(layer, keras.layers.SpectralNormalization)}
    kinds = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)
    kernels = [layer for layer in found if isinstance(layer, kinds)]
    assert kernels, "expected at least one conv or dense layer"
    return [layer.name for layer in kernels if id(layer) not in wrapped]


# --- normalisation -----------------------------------------------------------------------------


def test_instance_norm_matches_numpy_reference():
    x = _rng(0).normal(2.0, 3.0, size=(2, 5, 6, 3)).astype("float32")
    out = np.asarray(L.InstanceNormalization()(x))
    np.testing.assert_allclose(out, _numpy_instance_norm(x.astype(np.float64)), atol=1e-5)


def test_instance_norm_epsilon_matters_on_flat_channels():
    # A nearly constant channel exposes epsilon: PyTorch's 1e-5, not GroupNormalization's 1e-3.
    x = np.zeros((1, 4, 4, 1), "float32")
    x[0, 0, 0, 0] = 0.01
    out = np.asarray(L.InstanceNormalization()(x))
    np.testing.assert_allclose(out, _numpy_instance_norm(x.astype(np.float64), 1e-5), atol=1e-4)
    assert not np.allclose(out, _numpy_instance_norm(x.astype(np.float64), 1e-3), atol=1e-2)


def test_instance_norm_affine_parameters_are_per_channel():
    layer = L.InstanceNormalization(center=True, scale=True)
    x = _rng(1).normal(size=(2, 4, 4, 3)).astype("float32")
    layer.build(x.shape)
    gamma = np.array([1.0, 2.0, -1.0], "float32")
    beta = np.array([0.5, 0.0, -3.0], "float32")
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    expected = _numpy_instance_norm(x.astype(np.float64)) * gamma + beta
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5)
    assert [tuple(w.shape) for w in layer.weights] == [(3,), (3,)]


def test_layer_norm_normalises_whole_sample_with_per_channel_affine():
    x = _rng(2).normal(1.0, 2.0, size=(2, 3, 4, 5)).astype("float32")
    layer = L.LayerNormalization()
    layer.build(x.shape)
    gamma = _rng(3).normal(size=5).astype("float32")
    beta = _rng(4).normal(size=5).astype("float32")
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(1, 2, 3), keepdims=True)
    var = x64.var(axis=(1, 2, 3), keepdims=True)
    expected = (x64 - mean) / np.sqrt(var + 1e-5) * gamma + beta
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5)
    # Per-channel parameters, so the layer is not tied to one image size.
    np.asarray(layer(np.zeros((1, 7, 9, 5), "float32")))


def _cbin_expected(layer, x, code):
    kernel = np.asarray(layer.bias_dense.layer.kernel, np.float64)
    bias = np.asarray(layer.bias_dense.layer.bias, np.float64)
    shift = np.tanh(code.astype(np.float64) @ kernel + bias)
    return _numpy_instance_norm(x.astype(np.float64)) + shift[:, None, None, :]


def test_cbin_is_instance_norm_plus_tanh_of_linear_code():
    rng = _rng(5)
    x = rng.normal(size=(2, 4, 4, 6)).astype("float32")
    code = rng.normal(size=(2, 3)).astype("float32")
    layer = L.CentralBiasingInstanceNorm()
    out = np.asarray(layer([x, code]))  # inference: the stored kernel is used as is
    np.testing.assert_allclose(out, _cbin_expected(layer, x, code), atol=1e-5)
    # Training mode normalises the kernel first and stores it; the output uses that kernel.
    out = np.asarray(layer([x, code], training=True))
    np.testing.assert_allclose(out, _cbin_expected(layer, x, code), atol=1e-5)


def test_cbin_different_codes_give_different_per_channel_shifts():
    rng = _rng(6)
    x = rng.normal(size=(1, 4, 4, 6)).astype("float32")
    layer = L.CentralBiasingInstanceNorm()
    a = np.asarray(layer([x, np.array([[1.0, 0.0, 0.0]], "float32")]))
    b = np.asarray(layer([x, np.array([[0.0, 1.0, 0.0]], "float32")]))
    assert np.abs(a - b).max() > 1e-4
    # The difference is a pure per-channel shift: constant over space.
    diff = a - b
    np.testing.assert_allclose(diff, np.broadcast_to(diff[:, :1, :1, :], diff.shape), atol=1e-5)


def test_cbin_linear_is_spectrally_normalised_and_sigma_goes_to_one():
    layer = L.CentralBiasingInstanceNorm()
    x = _rng(7).normal(size=(2, 4, 4, 8)).astype("float32")
    code = _rng(8).normal(size=(2, 5)).astype("float32")
    layer([x, code])
    assert isinstance(layer.bias_dense, keras.layers.SpectralNormalization)
    layer.bias_dense.layer.kernel.assign(
        3.0 * np.asarray(layer.bias_dense.layer.kernel))  # make σ clearly ≠ 1
    for _ in range(30):
        layer([x, code], training=True)
    sigma = np.linalg.svd(np.asarray(layer.bias_dense.layer.kernel), compute_uv=False)[0]
    assert sigma == pytest.approx(1.0, abs=0.02)


def test_adain_is_instance_norm_times_one_plus_linear_code_plus_linear_code():
    rng = _rng(9)
    x = rng.normal(2.0, 3.0, size=(2, 4, 4, 6)).astype("float32")
    code = rng.normal(size=(2, 3)).astype("float32")
    layer = L.AdaptiveInstanceNorm()
    layer([x, code])
    # Non-zero biases so both heads are exercised away from their initial values.
    layer.scale_dense.layer.bias.assign(rng.normal(size=6).astype("float32"))
    layer.bias_dense.layer.bias.assign(rng.normal(size=6).astype("float32"))

    def expected():
        linear = lambda dense: (code.astype(np.float64) @ np.asarray(dense.layer.kernel, np.float64)
                                + np.asarray(dense.layer.bias, np.float64))
        scale, shift = linear(layer.scale_dense), linear(layer.bias_dense)
        return (_numpy_instance_norm(x.astype(np.float64)) * (1.0 + scale[:, None, None, :])
                + shift[:, None, None, :])

    np.testing.assert_allclose(np.asarray(layer([x, code])), expected(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer([x, code], training=True)), expected(), atol=1e-5)


def test_adain_code_can_switch_a_channel_off_which_cbin_cannot():
    x = _rng(10).normal(size=(1, 4, 4, 2)).astype("float32")
    code = np.array([[1.0]], "float32")
    adain = L.AdaptiveInstanceNorm(spectral_normalization="none")
    adain([x, code])
    adain.scale_dense.kernel.assign([[-1.0, 0.0]])  # 1 + γ = 0 for channel 0
    out = np.asarray(adain([x, code]))
    assert out[..., 0].std() < 1e-6  # only the code's shift is left of channel 0
    assert out[..., 1].std() == pytest.approx(1.0, abs=1e-3)
    cbin = L.CentralBiasingInstanceNorm(spectral_normalization="none")
    # CBIN shifts by a tanh in (−1, 1): the normalised content always passes at unit spread.
    assert np.asarray(cbin([x, code]))[..., 0].std() == pytest.approx(1.0, abs=1e-3)


def test_cbin_requires_a_list_input():
    with pytest.raises(ValueError, match=r"\[x, code\]"):
        L.CentralBiasingInstanceNorm()(np.zeros((1, 2, 2, 3), "float32"))


# --- padding and pooling -----------------------------------------------------------------------


def test_reflection_padding_matches_numpy():
    x = np.arange(2 * 4 * 5 * 2, dtype="float32").reshape(2, 4, 5, 2)
    out = np.asarray(L.ReflectionPadding2D(((1, 2), (3, 1)))(x))
    expected = np.pad(x, ((0, 0), (1, 2), (3, 1), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(out, expected)
    layer = L.ReflectionPadding2D(2)
    assert layer.compute_output_shape((None, 4, 5, 2)) == (None, 8, 9, 2)


def test_padded_average_pooling_excludes_padding_from_the_count():
    x = _rng(9).normal(size=(1, 6, 6, 2)).astype("float32")
    out = np.asarray(L.PaddedAveragePooling2D(3, 2, 1)(x))
    expected = np.zeros((1, 3, 3, 2))
    for i in range(3):
        for j in range(3):
            rows = slice(max(2 * i - 1, 0), min(2 * i + 2, 6))
            cols = slice(max(2 * j - 1, 0), min(2 * j + 2, 6))
            expected[0, i, j] = x[0, rows, cols].mean(axis=(0, 1))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # A constant image stays constant (the border windows are not diluted by zeros).
    np.testing.assert_allclose(np.asarray(L.PaddedAveragePooling2D()(np.ones((1, 8, 8, 1)))), 1.0)


# --- blocks -------------------------------------------------------------------------------------


def test_spatial_broadcast_concat_tiles_the_vector():
    x = np.zeros((2, 3, 4, 1), "float32")
    v = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    out = np.asarray(L.SpatialBroadcastConcat()([x, v]))
    assert out.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(out[1, 2, 3], [0.0, 3.0, 4.0])
    np.testing.assert_array_equal(out[0, :, :, 1:], np.broadcast_to([1.0, 2.0], (3, 4, 2)))


def test_block_shapes_and_pytorch_geometry():
    x = _rng(10).normal(size=(2, 16, 16, 4)).astype("float32")
    code = _rng(11).normal(size=(2, 5)).astype("float32")
    # 7x7 reflect p3 (DMIT stem), 4x4/2 p1 (down), 4x4/2 transposed (up).
    assert L.ConvBlock(8, 7, padding=3, pad_type="reflect")(x).shape == (2, 16, 16, 8)
    assert L.ConvBlock(8, 4, strides=2, padding=1)(x).shape == (2, 8, 8, 8)
    assert L.ConvTransposeBlock(3, normalization="layer", activation="relu")(x).shape == (
        2, 32, 32, 3)
    assert L.ResidualBlock()(x).shape == x.shape
    assert L.ResidualBlock(conditional=True, activation="relu")([x, code]).shape == x.shape
    assert L.DownResidualBlock(6)(x).shape == (2, 8, 8, 6)
    assert L.DownResidualBlock(6, conditional=True)([x, code]).shape == (2, 8, 8, 6)


def test_conditional_blocks_depend_on_the_code():
    x = _rng(12).normal(size=(1, 8, 8, 4)).astype("float32")
    for block in (L.ResidualBlock(conditional=True), L.DownResidualBlock(4, conditional=True)):
        a = np.asarray(block([x, np.ones((1, 3), "float32")]))
        b = np.asarray(block([x, -np.ones((1, 3), "float32")]))
        assert np.abs(a - b).max() > 1e-4


def test_conv_block_init_is_normal_002_and_bias_zero():
    block = L.ConvBlock(64, 4, use_bias=True)
    block.build((None, 16, 16, 32))
    kernel = np.asarray(block.conv.layer.kernel)
    assert abs(kernel.std() - 0.02) < 0.002 and abs(kernel.mean()) < 0.002
    np.testing.assert_array_equal(np.asarray(block.conv.layer.bias), 0.0)


def test_every_conv_and_dense_in_the_blocks_is_spectrally_normalised():
    x = keras.Input((16, 16, 4))
    code = keras.Input((5,))
    h = L.ConvBlock(8, 3, padding=1, pad_type="reflect", normalization="instance")(x)
    h = L.ResidualBlock(conditional=True)([h, code])
    h = L.ResidualBlock()(h)
    h = L.DownResidualBlock(8, conditional=True)([h, code])
    h = L.DownResidualBlock(8)(h)
    h = L.ConvTransposeBlock(4, normalization="layer")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = L.spectral_dense(2)(h)
    model = keras.Model([x, code], out)
    assert _unwrapped_kernels(model) == []


def test_spectral_normalisation_can_be_switched_off():
    block = L.ConvBlock(4, 3, spectral_normalization=False)
    block.build((None, 8, 8, 2))
    assert isinstance(block.conv, keras.layers.Conv2D)


def test_training_mode_updates_the_spectral_norm_inference_does_not():
    block = L.ConvBlock(4, 3, padding=1)
    x = _rng(13).normal(size=(1, 8, 8, 2)).astype("float32")
    block(x)
    before = np.asarray(block.conv.layer.kernel).copy()
    block(x, training=False)
    np.testing.assert_array_equal(np.asarray(block.conv.layer.kernel), before)
    block(x, training=True)
    assert np.abs(np.asarray(block.conv.layer.kernel) - before).max() > 0


@pytest.mark.parametrize("layer,call_input", [
    (L.InstanceNormalization(epsilon=1e-3, center=True, scale=True), "x"),
    (L.LayerNormalization(epsilon=1e-4, affine=False), "x"),
    (L.CentralBiasingInstanceNorm(epsilon=1e-4), "x_code"),
    (L.ReflectionPadding2D(((1, 2), (0, 1))), "x"),
    (L.PaddedAveragePooling2D(3, 2, 1), "x"),
    (L.SpatialBroadcastConcat(), "x_code"),
    (L.ConvBlock(5, 3, strides=2, padding=1, pad_type="reflect", normalization="layer",
                 activation="lrelu", use_bias=False), "x"),
    (L.ConvTransposeBlock(5, normalization="instance", activation="tanh"), "x"),
    (L.ResidualBlock(conditional=True, activation="relu", dropout_rate=0.5), "x_code"),
    (L.DownResidualBlock(7, conditional=False, activation="lrelu"), "x"),
])
def test_get_config_round_trip(layer, call_input):
    x = _rng(14).normal(size=(2, 8, 8, 4)).astype("float32")
    code = _rng(15).normal(size=(2, 3)).astype("float32")
    inputs = [x, code] if call_input == "x_code" else x
    out = np.asarray(layer(inputs))
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # Registered for Keras serialisation under "pop_tf>".
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config
    clone(inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(inputs)), out, atol=1e-6)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="normalization"):
        L.ConvBlock(4, normalization="batch")
    with pytest.raises(ValueError, match="pad_type"):
        L.ConvBlock(4, padding=1, pad_type="replicate")
    with pytest.raises(ValueError, match="padding"):
        L.ReflectionPadding2D("same")
    with pytest.raises(ValueError, match="conditional=True"):
        L.ResidualBlock(conditional=True)(np.zeros((1, 4, 4, 2), "float32"))
