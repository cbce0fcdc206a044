"""Tests of LPIPS, its converter and the diversity protocol (pop_tf.metrics.lpips, lpips_convert;
docs/metrics.md).

Nothing is downloaded: the backbone is a randomly initialised VGG16 or AlexNet (weights="none",
seeded) or a file written here from a random torchvision-layout state dict, the linear layers are
the ones the `lpips` wheel ships, and images are 16 to 64 pixels.
"""

import os
import sys

import keras
import numpy as np
import pytest

from pop_tf.errors import PopTfError, UsageError
from pop_tf.metrics import lpips as lp
from pop_tf.metrics import lpips_convert as conv
from tests.torch_reference import reference

def _torchvision_state_dict(seed):
    """A random state dict with the keys and shapes of torchvision's vgg16()."""
    rng = np.random.default_rng(seed)
    state = {}
    for index, _, c_in, c_out in conv.VGG16_CONVOLUTIONS:
        # He-scaled so activations neither vanish nor explode through 13 layers.
        std = np.sqrt(2.0 / (9 * c_in))
        state[f"features.{index}.weight"] = (rng.standard_normal((c_out, c_in, 3, 3)) * std
                                             ).astype(np.float32)
        state[f"features.{index}.bias"] = (rng.standard_normal(c_out) * 0.01).astype(np.float32)
    state["classifier.0.weight"] = np.zeros((4, 4), np.float32)  # ignored by the converter
    return state


def _linear_state_dict(seed, dropout_index=1):
    rng = np.random.default_rng(seed)
    return {f"lin{k}.model.{dropout_index}.weight":
            rng.uniform(0.0, 1.0, (1, c, 1, 1)).astype(np.float32)
            for k, c in enumerate(lp.LAYER_CHANNELS)}


def _smooth_images(seed, count, size):
    """Low-frequency colour images in [-0.6, 0.6], so added noise is a clear degradation."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-0.6, 0.6, (count, 4, 4, 3)).astype(np.float32)
    return np.asarray(keras.ops.image.resize(coarse, (size, size), interpolation="bilinear"))


@pytest.fixture(scope="module")
def metric():
    keras.utils.set_random_seed(0)
    return lp.LPIPS(weights="none")


@pytest.fixture(scope="module")
def converted_files(tmp_path_factory):
    """A converted random 'torchvision' backbone and converted linear weights."""
    folder = tmp_path_factory.mktemp("lpips")
    backbone = str(folder / "vgg16_torchvision.weights.h5")
    state = _torchvision_state_dict(1)
    conv.save_vgg16_weights(backbone, conv.vgg16_kernels_from_state_dict(state))
    linear = str(folder / "lpips_vgg.npz")
    lp.save_linear_weights(linear, conv.linear_weights_from_state_dict(_linear_state_dict(2)))
    return {"backbone": backbone, "linear": linear, "state": state, "folder": folder}


# --- the distance --------------------------------------------------------------------------------


def test_identical_images_are_at_distance_zero(metric):
    images = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    assert np.allclose(metric(images, images), 0.0, atol=1e-6)


def test_distance_is_symmetric_and_non_negative(metric):
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    forward, backward = metric(a, b), metric(b, a)
    assert forward.shape == (4,) and forward.dtype == np.float32
    assert np.all(forward > 0)
    np.testing.assert_allclose(forward, backward, rtol=1e-5)


def test_distance_grows_with_added_noise(metric):
    base = _smooth_images(2, 4, 32)
    noise = np.random.default_rng(3).standard_normal(base.shape).astype(np.float32)
    means = []
    for level in (0.02, 0.05, 0.1, 0.2, 0.4):
        noisy = np.clip(base + level * noise, -1.0, 1.0)
        means.append(float(metric(base, noisy).mean()))
    assert all(later > earlier for earlier, later in zip(means, means[1:])), means


def test_uint8_images_are_mapped_from_0_255_to_minus1_1(metric):
    pixels = np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    other = pixels[::-1].copy()
    as_float = pixels.astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(metric(pixels, other),
                               metric(as_float, other.astype(np.float32) / 127.5 - 1.0),
                               rtol=1e-5)


def test_grayscale_images_are_repeated_to_rgb(metric):
    gray = np.random.default_rng(5).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(metric(gray, gray[::-1]),
                               metric(np.repeat(gray, 3, -1), np.repeat(gray[::-1], 3, -1)),
                               rtol=1e-5)


def test_one_graph_serves_every_batch_and_image_size(metric):
    rng = np.random.default_rng(6)
    before = metric._forward.experimental_get_tracing_count()
    for shape in ((1, 16, 16, 3), (3, 48, 40, 3), (5, 32, 32, 3)):
        a = rng.uniform(-1, 1, shape).astype(np.float32)
        assert np.all(np.isfinite(metric(a, a[::-1], batch_size=2)))
    assert metric._forward.experimental_get_tracing_count() == max(before, 1)


def test_batch_size_does_not_change_distances(metric):
    rng = np.random.default_rng(7)
    a = rng.uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(metric(a, b, batch_size=2), metric(a, b, batch_size=5), rtol=1e-5)


def test_images_below_16_pixels_are_rejected_and_16_works(metric):
    small = np.zeros((1, 15, 32, 3), np.float32)
    with pytest.raises(ValueError, match="at least 16x16"):
        metric(small, small)
    tiny = np.random.default_rng(8).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    assert np.all(np.isfinite(metric(tiny, tiny[::-1])))


@pytest.mark.parametrize("a, b, message", [
    (np.full((1, 32, 32, 3), 2.0, np.float32), np.zeros((1, 32, 32, 3), np.float32), r"\[-1, 1\]"),
    (np.zeros((1, 32, 32, 3), np.float32), np.zeros((2, 32, 32, 3), np.float32), "same shape"),
    (np.zeros((32, 32, 3), np.float32), np.zeros((32, 32, 3), np.float32), r"\[N, H, W, 3\]"),
    (np.zeros((0, 32, 32, 3), np.float32), np.zeros((0, 32, 32, 3), np.float32), "empty"),
    (np.zeros((1, 32, 32, 3), np.int32), np.zeros((1, 32, 32, 3), np.int32), "uint8"),
    (np.full((1, 32, 32, 3), np.nan, np.float32), np.zeros((1, 32, 32, 3), np.float32), "float"),
])
def test_bad_images_give_clear_errors(metric, a, b, message):
    with pytest.raises(ValueError, match=message):
        metric(a, b)


# --- the structure -------------------------------------------------------------------------------


def test_backbone_is_tapped_at_the_five_lpips_layers(metric):
    assert [name for name, _, _ in metric.layers] == [
        "block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"]
    assert [name for _, name, _ in metric.layers] == [
        "relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    outputs = metric.feature_model(np.zeros((1, 32, 32, 3), np.float32))
    assert [tuple(o.shape) for o in outputs] == [
        (1, 32, 32, 64), (1, 16, 16, 128), (1, 8, 8, 256), (1, 4, 4, 512), (1, 2, 2, 512)]
    for name, _, _ in metric.layers:
        # Keras fuses the ReLU into the convolution: the tapped outputs are post-ReLU, as in lpips.
        assert metric.feature_model.get_layer(name).activation is keras.activations.relu
    # Nothing after relu5_3 (block5_pool would need a 32x32 input).
    assert metric.feature_model.layers[-1].name == "block5_conv3"


def test_forward_is_scaling_layer_then_sum_of_layer_terms(metric):
    rng = np.random.default_rng(9)
    a = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    shift = np.array([-0.030, -0.088, -0.188], np.float32)
    scale = np.array([0.458, 0.448, 0.450], np.float32)
    features_a = metric.feature_model((a - shift) / scale)
    features_b = metric.feature_model((b - shift) / scale)
    expected = sum(np.asarray(lp.layer_distance(fa, fb, np.ones(fa.shape[-1], np.float32)))
                   for fa, fb in zip(features_a, features_b))
    assert metric.preprocessing == "lpips"
    np.testing.assert_allclose(metric(a, b), expected, rtol=1e-5)


def test_layer_distance_matches_a_hand_computed_value():
    # Pixel 1: a=(3,4) → (0.6, 0.8), b=(1,0) → (1, 0); squared difference (0.16, 0.64);
    # weights (1, 2) → 0.16 + 1.28 = 1.44. Pixel 2: a=(0,2), b=(0,5) both → (0, 1) → 0.
    # Spatial mean: 0.72.
    a = np.array([[[[3.0, 4.0], [0.0, 2.0]]]])
    b = np.array([[[[1.0, 0.0], [0.0, 5.0]]]])
    weights = np.array([1.0, 2.0])
    assert float(lp.layer_distance(a, b, weights)[0]) == pytest.approx(0.72, rel=1e-9)
    # Unit normalisation: rescaling either map (per pixel, by any positive factor) changes nothing.
    assert float(lp.layer_distance(10.0 * a, 0.5 * b, weights)[0]) == pytest.approx(0.72, rel=1e-9)


def test_normalisation_makes_feature_scale_irrelevant_and_keeps_zeros_finite():
    rng = np.random.default_rng(10)
    a = rng.uniform(0, 3, (2, 3, 3, 8))
    b = rng.uniform(0, 3, (2, 3, 3, 8))
    weights = rng.uniform(0, 1, 8)
    scale = rng.uniform(0.1, 50, (2, 3, 3, 1))
    np.testing.assert_allclose(np.asarray(lp.layer_distance(a * scale, b, weights)),
                               np.asarray(lp.layer_distance(a, b, weights)), rtol=1e-9)
    unit = np.asarray(lp.normalize_channels(a))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, rtol=1e-9)
    # A dead pixel (all channels 0 after ReLU) stays 0 instead of becoming NaN, as with lpips's eps.
    zeros = np.zeros((1, 1, 1, 8))
    assert np.all(np.asarray(lp.normalize_channels(zeros)) == 0.0)
    assert float(lp.layer_distance(zeros, a[:1, :1, :1], weights)[0]) == pytest.approx(
        float(np.sum(weights * np.asarray(lp.normalize_channels(a[:1, :1, :1]))[0, 0, 0] ** 2)))


# --- weights, files and names -------------------------------------------------------------------


def test_uniform_weights_are_ones_and_named_lpips_like(metric):
    assert [w.shape for w in metric.linear_weights] == [(c,) for c in (64, 128, 256, 512, 512)]
    assert all(np.all(w == 1.0) for w in metric.linear_weights)
    assert metric.metric_name == "lpips_like"
    assert metric.settings["linear_weights"].startswith("uniform")


def test_linear_weights_round_trip_through_npz(tmp_path):
    vectors = conv.linear_weights_from_state_dict(_linear_state_dict(3))
    path = tmp_path / "lin.npz"
    lp.save_linear_weights(path, vectors)
    loaded = lp.load_linear_weights(path)
    for key, array in zip(lp.LINEAR_KEYS, loaded):
        np.testing.assert_array_equal(array, vectors[key])
        assert array.dtype == np.float32


def test_linear_weights_scale_each_layer_term(converted_files, tmp_path):
    rng = np.random.default_rng(11)
    a = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    uniform = lp.LPIPS(weights=converted_files["backbone"])
    first_layer_only = [np.full(c, 3.0 if k == 0 else 0.0) for k, c in enumerate(lp.LAYER_CHANNELS)]
    lp.save_linear_weights(tmp_path / "first.npz", first_layer_only)
    weighted = lp.LPIPS(weights=converted_files["backbone"], linear_weights=tmp_path / "first.npz")
    shift = np.array(lp.SCALING_SHIFT, np.float32)
    scale = np.array(lp.SCALING_SCALE, np.float32)
    fa = uniform.feature_model((a - shift) / scale)[0]
    fb = uniform.feature_model((b - shift) / scale)[0]
    expected = 3.0 * np.asarray(lp.layer_distance(fa, fb, np.ones(64, np.float32)))
    np.testing.assert_allclose(weighted(a, b), expected, rtol=1e-5)
    assert np.all(uniform(a, b) > weighted(a, b) / 3.0)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(lin2=-d["lin2"]), "negative"),
    (lambda d: d.update(lin0=np.ones(65)), r"shape \[64\]"),
    (lambda d: d.pop("lin4"), "missing: lin4"),
    (lambda d: d.update(extra=np.ones(3)), "unexpected: extra"),
    (lambda d: d.update(lin1=np.full(128, np.inf)), "finite"),
])
def test_invalid_linear_weight_files_are_clear_errors(tmp_path, change, message):
    vectors = {k: np.ones(c, np.float32) for k, c in zip(lp.LINEAR_KEYS, lp.LAYER_CHANNELS)}
    change(vectors)
    path = tmp_path / "bad.npz"
    np.savez(path, **vectors)
    with pytest.raises(lp.LinearWeightsError, match=message):
        lp.load_linear_weights(path)
    with pytest.raises(ValueError, match=message):
        lp.LPIPS(weights="none", linear_weights=path)


def test_missing_or_unreadable_linear_file_is_a_clear_error(tmp_path):
    with pytest.raises(lp.LinearWeightsError, match="does not exist"):
        lp.load_linear_weights(tmp_path / "nope.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(lp.LinearWeightsError, match="Could not read"):
        lp.load_linear_weights(broken)


def test_standard_needs_both_converted_files(converted_files):
    with pytest.raises(ValueError, match="standard=True"):
        lp.LPIPS(weights="none", standard=True)
    with pytest.raises(ValueError, match="standard=True"):
        lp.LPIPS(weights=converted_files["backbone"], standard=True)
    with pytest.raises(ValueError, match="standard=True"):
        lp.LPIPS(weights=converted_files["backbone"], linear_weights=converted_files["linear"],
                 preprocessing="caffe", standard=True)
    published = lp.LPIPS(weights=converted_files["backbone"],
                         linear_weights=converted_files["linear"], standard=True)
    assert published.metric_name == "lpips" and published.preprocessing == "lpips"
    assert published.settings["weights"] == converted_files["backbone"]
    not_claimed = lp.LPIPS(weights=converted_files["backbone"],
                           linear_weights=converted_files["linear"])
    assert not_claimed.metric_name == "lpips_like"


def test_keras_imagenet_weights_get_caffe_input(monkeypatch):
    import pop_tf.models.backbones as backbones

    def offline_free_application(name, weights, input_shape, **kwargs):
        assert (name, weights) == ("vgg16", "imagenet")
        return keras.applications.VGG16(include_top=False, weights=None, input_shape=input_shape)

    monkeypatch.setattr(backbones, "application", offline_free_application)
    metric = lp.LPIPS(weights="imagenet")
    assert metric.preprocessing == "caffe" and metric.metric_name == "lpips_like"
    # [-1, 1] RGB → [0, 255] BGR minus the Caffe mean (B 103.939, G 116.779, R 123.68).
    rgb = np.array([[[[-1.0, 0.0, 1.0]]]], np.float32)
    prepared = np.asarray(metric._prepare(rgb))[0, 0, 0]
    np.testing.assert_allclose(prepared, [255.0 - 103.939, 127.5 - 116.779, 0.0 - 123.68],
                               rtol=1e-5)
    images = np.random.default_rng(19).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    assert np.all(metric(images, images[::-1]) > 0) and np.all(metric(images, images) < 1e-6)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        lp.LPIPS(weights="none", preprocessing="torch")
    with pytest.raises(ValueError, match="TF-Hub"):
        lp.LPIPS(weights="hub:/some/module")
    with pytest.raises(PopTfError, match="does not exist"):
        lp.LPIPS(weights="/no/such/vgg16.weights.h5")


# --- the converter -------------------------------------------------------------------------------


def test_linear_converter_reads_published_layout_and_ignores_other_keys():
    state = _linear_state_dict(12)
    state["scaling_layer.shift"] = np.zeros((1, 3, 1, 1), np.float32)
    state["lins.0.model.1.weight"] = -np.ones((1, 64, 1, 1), np.float32)  # the ModuleList alias
    vectors = conv.linear_weights_from_state_dict(state)
    assert list(vectors) == list(lp.LINEAR_KEYS)
    for k, key in enumerate(lp.LINEAR_KEYS):
        np.testing.assert_array_equal(vectors[key], state[f"lin{k}.model.1.weight"].reshape(-1))
    # Checkpoints trained without dropout name the convolution model.0.
    assert conv.linear_weights_from_state_dict(_linear_state_dict(12, dropout_index=0)).keys() \
        == vectors.keys()


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"lin3.model.1.weight": -s["lin3.model.1.weight"]}), "negative"),
    (lambda s: s.pop("lin1.model.1.weight"), "no lin1"),
    (lambda s: s.update({"lin0.model.1.weight": np.ones((1, 64), np.float32)}),
     r"\[1, 64, 1, 1\]"),
    (lambda s: s.update({"lin1.model.1.weight": np.ones((1, 192, 1, 1), np.float32)}), "alex"),
    (lambda s: s.update({"lin5.model.1.weight": np.ones((1, 512, 1, 1), np.float32)}), "lin5"),
    (lambda s: s.update({"lin2.model.0.weight": np.ones((1, 256, 1, 1), np.float32)}), "two"),
])
def test_linear_converter_rejects_bad_checkpoints(change, message):
    state = _linear_state_dict(13)
    change(state)
    with pytest.raises(lp.LinearWeightsError, match=message):
        conv.linear_weights_from_state_dict(state)


def test_vgg_converter_keeps_pytorch_convolution_semantics():
    state = _torchvision_state_dict(14)
    layers = conv.vgg16_kernels_from_state_dict(state)
    assert list(layers) == [name for _, name, _, _ in conv.VGG16_CONVOLUTIONS]
    kernel, bias = layers["block1_conv1"]
    assert kernel.shape == (3, 3, 3, 64) and bias.shape == (64,)
    # PyTorch: out[o, y, x] = b[o] + Σ_{i, ky, kx} W[o, i, ky, kx] · in[i, y + ky - 1, x + kx - 1].
    image = np.random.default_rng(15).standard_normal((1, 5, 5, 3)).astype(np.float32)
    torch_w, torch_b = state["features.0.weight"], state["features.0.bias"]
    patch = image[0, 1:4, 1:4, :]  # the 3x3 neighbourhood of pixel (2, 2), [ky, kx, i]
    expected = torch_b + np.einsum("oiyx,yxi->o", torch_w, patch)
    layer = keras.layers.Conv2D(64, 3, padding="same")
    layer.build((None, 5, 5, 3))
    layer.set_weights([kernel, bias])
    np.testing.assert_allclose(np.asarray(layer(image))[0, 2, 2], expected, rtol=1e-5, atol=1e-5)


def test_vgg_converter_rejects_wrong_shapes_and_missing_layers():
    state = _torchvision_state_dict(16)
    state["features.28.bias"] = np.zeros(256, np.float32)
    with pytest.raises(ValueError, match="block5_conv3"):
        conv.vgg16_kernels_from_state_dict(state)
    del state["features.28.bias"]
    with pytest.raises(ValueError, match="no features.28.bias"):
        conv.vgg16_kernels_from_state_dict(state)


def test_converted_backbone_file_loads_into_lpips(converted_files):
    metric = lp.LPIPS(weights=converted_files["backbone"])
    kernel = metric.feature_model.get_layer("block3_conv2").get_weights()[0]
    np.testing.assert_array_equal(
        kernel, converted_files["state"]["features.12.weight"].transpose(2, 3, 1, 0))


def test_converter_cli_without_torch_exits_2_with_install_hint(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "vgg.pth"
    checkpoint.write_bytes(b"fake")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    code = conv.main(["--linear", str(checkpoint), "--output", str(tmp_path / "out.npz")])
    assert code == 2
    assert "pip install torch" in capsys.readouterr().err


def test_converter_cli_writes_a_loadable_npz(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "vgg.pth"
    checkpoint.write_bytes(b"fake")
    state = _linear_state_dict(17)
    monkeypatch.setattr(conv, "load_torch_state_dict", lambda path: state)
    assert conv.main(["--linear", str(checkpoint), "--output", str(tmp_path / "lin")]) == 0
    loaded = lp.load_linear_weights(tmp_path / "lin.npz")
    np.testing.assert_array_equal(loaded[4], state["lin4.model.1.weight"].reshape(-1))
    assert "lin.npz" in capsys.readouterr().out
    state["lin0.model.1.weight"] = -state["lin0.model.1.weight"]
    assert conv.main(["--linear", str(checkpoint), "--output", str(tmp_path / "bad.npz")]) == 1
    assert "negative" in capsys.readouterr().err
    assert conv.main(["--linear", str(tmp_path / "none.pth"), "--output", "x.npz"]) == 2


# --- AlexNet and the lpips package itself ----------------------------------------------------------


# lpips builds its random backbone with torchvision's deprecated pretrained=False.
@pytest.mark.filterwarnings("ignore:.*deprecated since 0.13:UserWarning")
@pytest.mark.parametrize("net, size", [("alex", 64), ("vgg", 32)])
def test_converted_published_linear_layers_and_random_backbone_match_lpips(net, size, tmp_path, capsys):
    lpips_package = reference("lpips")
    import torch

    torch.manual_seed(0)
    # The shipped v0.1 linear layers (pretrained=True reads them from the package's folder) on a
    # random torchvision backbone (pnet_rand=True: nothing to download).
    published = lpips_package.LPIPS(net=net, pnet_rand=True, verbose=False)
    checkpoint = tmp_path / "lpips_module.pth"
    torch.save(published.state_dict(), checkpoint)
    linear, backbone = str(tmp_path / f"lpips_{net}.npz"), str(tmp_path / f"{net}.weights.h5")
    # The linear layers from the installed package (no --linear), the backbone from the saved
    # module's net.slice<s>.<i> keys.
    assert conv.main(["--net", net, "--output", linear, f"--{net}", str(checkpoint), f"--{net}-output", backbone]) == 0
    assert f"v0.1{os.sep}{net}.pth" in capsys.readouterr().out
    metric = lp.LPIPS(net=net, weights=backbone, linear_weights=linear, standard=True)
    for k, weights in enumerate(metric.linear_weights):
        np.testing.assert_array_equal(weights, getattr(published, f"lin{k}").model[1].weight.detach().numpy().reshape(-1))
    rng = np.random.default_rng(30)
    a = _smooth_images(31, 3, size)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), -1, 1).astype(np.float32)
    b[2] = rng.uniform(-1, 1, b[2].shape)  # one unrelated pair: a large distance
    with torch.no_grad():
        expected = published(torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))),
                             torch.from_numpy(np.ascontiguousarray(b.transpose(0, 3, 1, 2)))).numpy().reshape(-1)
    distances = metric(a, b)
    assert np.abs(distances - expected).max() <= 1e-4, (distances, expected)
    assert expected[2] > 2 * expected[:2].max()  # the pairs span a range, so order errors show


def test_alexnet_backbone_structure_and_smallest_image():
    keras.utils.set_random_seed(0)
    metric = lp.LPIPS(net="alex", weights="none")
    assert [(name, lpips_name) for name, lpips_name, _ in metric.layers] == [
        ("conv1", "relu1"), ("conv2", "relu2"), ("conv3", "relu3"), ("conv4", "relu4"), ("conv5", "relu5")]
    # conv1: (64 + 2·2 − 11) // 4 + 1 = 15; each 3×3/2 pool: (15 − 3) // 2 + 1 = 7, then 3.
    outputs = metric.feature_model(np.zeros((1, 64, 64, 3), np.float32))
    assert [tuple(o.shape) for o in outputs] == [
        (1, 15, 15, 64), (1, 7, 7, 192), (1, 3, 3, 384), (1, 3, 3, 256), (1, 3, 3, 256)]
    assert all(metric.feature_model.get_layer(name).activation is keras.activations.relu
               for name, _, _ in metric.layers)
    assert metric.settings["backbone"] == "alexnet" and metric.settings["layers"][-1] == "relu5"
    assert metric.metric_name == "lpips_like" and metric.preprocessing == "lpips"
    with pytest.raises(ValueError, match="at least 31x31"):
        metric(np.zeros((1, 30, 64, 3), np.float32), np.zeros((1, 30, 64, 3), np.float32))
    smallest = np.random.default_rng(32).uniform(-1, 1, (2, 31, 31, 3)).astype(np.float32)
    assert np.all(np.isfinite(metric(smallest, smallest[::-1])))
    assert [tuple(o.shape) for o in metric.feature_model(smallest)][-1] == (2, 1, 1, 256)


def test_alexnet_options_and_mismatched_linear_weights_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Keras ships no ImageNet AlexNet.*--alex"):
        lp.LPIPS(net="alex", weights="imagenet")
    with pytest.raises(ValueError, match="caffe"):
        lp.LPIPS(net="alex", weights="none", preprocessing="caffe")
    with pytest.raises(ValueError, match="net must be one of vgg, alex"):
        lp.LPIPS(net="squeeze", weights="none")
    vgg_linear = tmp_path / "vgg.npz"
    lp.save_linear_weights(vgg_linear, [np.ones(c) for c in lp.NET_CHANNELS["vgg"]])
    with pytest.raises(lp.LinearWeightsError, match="LPIPS on vgg16.*pass net=vgg"):
        lp.LPIPS(net="alex", weights="none", linear_weights=vgg_linear)
    alex_state = {f"lin{k}.model.1.weight": np.ones((1, c, 1, 1), np.float32)
                  for k, c in enumerate(lp.NET_CHANNELS["alex"])}
    with pytest.raises(lp.LinearWeightsError, match="--net alex"):
        conv.linear_weights_from_state_dict(alex_state)
    assert [v.shape for v in conv.linear_weights_from_state_dict(alex_state, net="alex").values()] == [
        (64,), (192,), (384,), (256,), (256,)]


def test_alexnet_converter_rejects_other_checkpoints():
    rng = np.random.default_rng(33)
    state = {f"features.{index}.{kind}": rng.standard_normal(shape).astype(np.float32)
             for index, _, c_in, c_out, k in conv.ALEXNET_CONVOLUTIONS
             for kind, shape in (("weight", (c_out, c_in, k, k)), ("bias", (c_out,)))}
    layers = conv.alexnet_kernels_from_state_dict(state)
    np.testing.assert_array_equal(layers["conv2"][0], state["features.3.weight"].transpose(2, 3, 1, 0))
    misshapen = dict(state, **{"features.8.weight": np.zeros((256, 384, 5, 5), np.float32)})
    with pytest.raises(ValueError, match=r"AlexNet conv4 needs \[256, 384, 3, 3\]"):
        conv.alexnet_kernels_from_state_dict(misshapen)
    del state["features.10.bias"]
    with pytest.raises(ValueError, match="no features.10.bias"):
        conv.alexnet_kernels_from_state_dict(state)


def test_converter_without_the_lpips_package_names_the_fix(tmp_path, monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "lpips" else real_find_spec(name, *args))
    with pytest.raises(UsageError, match="pip install lpips"):
        conv.installed_linear_weights("alex")
    assert conv.main(["--net", "alex", "--output", str(tmp_path / "lin.npz")]) == 2
    assert "--linear" in capsys.readouterr().err
    assert not (tmp_path / "lin.npz").exists()


# --- diversity -----------------------------------------------------------------------------------


def _mean_abs_difference(a, b):
    return np.abs(a - b).reshape(len(a), -1).mean(axis=1)


def test_diversity_averages_all_pairs_of_each_input():
    # Input 0: outputs of constant value 0, 1, 3 → pair distances 1, 3, 2.
    # Input 1: outputs 0, 0, 4 → 0, 4, 4. Mean 14/6; np.std over the six / sqrt(6).
    values = np.array([[0, 1, 3], [0, 0, 4]], np.float32)
    outputs = np.broadcast_to(values[:, :, None, None, None], (2, 3, 2, 2, 3))
    pairs = np.array([1, 3, 2, 0, 4, 4], np.float64)
    for batch_size in (1, 4, 100):
        result = lp.diversity(_mean_abs_difference, outputs, batch_size=batch_size)
        assert result["mean"] == pytest.approx(14 / 6)
        assert result["stderr"] == pytest.approx(pairs.std() / np.sqrt(6))
        assert (result["num_pairs"], result["num_inputs"], result["outputs_per_input"]) == (6, 2, 3)
        assert result["metric"] is None


def test_diversity_of_identical_outputs_is_zero_with_lpips(metric):
    one = np.random.default_rng(18).uniform(-1, 1, (2, 1, 32, 32, 3)).astype(np.float32)
    result = lp.diversity(metric, np.repeat(one, 3, axis=1))
    assert result["mean"] == pytest.approx(0.0, abs=1e-6)
    assert result["num_pairs"] == 6 and result["metric"] == "lpips_like"


def test_diversity_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 outputs"):
        lp.diversity(_mean_abs_difference, np.zeros((3, 1, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"\[N_inputs, M_outputs"):
        lp.diversity(_mean_abs_difference, np.zeros((3, 4, 4, 3)))
    with pytest.raises(ValueError, match="one distance per pair"):
        lp.diversity(lambda a, b: np.zeros(1), np.zeros((1, 3, 4, 4, 3)), batch_size=3)
    with pytest.raises(ValueError, match="non-finite"):
        lp.diversity(lambda a, b: np.full(len(a), np.nan), np.zeros((1, 2, 4, 4, 3)))
