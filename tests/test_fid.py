"""Tests of the FID maths, the Inception feature extractor and the FID graph (pop_tf.metrics.fid,
fid_inception, fid_convert; docs/metrics.md).

Nothing is downloaded: the extractor is built with weights="none" or a file converted here from a
randomly initialised pytorch-fid network, and the offline ImageNet case is simulated by making
keras.applications.InceptionV3 raise what Keras raises without network.
"""

import copy
import os
import shutil
import sys

import h5py
import keras
import numpy as np
import pytest

from pop_tf.errors import PopTfError
from pop_tf.metrics import fid as fidlib
from pop_tf.metrics import fid_convert, fid_inception
from pop_tf.models.convert import ConversionError
from tests.torch_reference import reference


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- the maths ---------------------------------------------------------------------------------


def test_identical_sets_give_zero():
    act = np.random.default_rng(0).normal(size=(300, 16))
    assert abs(fidlib.fid_from_activations(act, act)) < 1e-6


def test_shifted_means_same_covariance_give_squared_mean_distance():
    rng = np.random.default_rng(1)
    d = 12
    sigma = _random_spd(rng, d)
    mu1 = rng.normal(size=d)
    delta = rng.normal(size=d)
    value = fidlib.frechet_distance(mu1, sigma, mu1 + delta, sigma)
    assert value == pytest.approx(float(delta @ delta), rel=1e-6, abs=1e-8)


def test_diagonal_covariances_match_closed_form():
    rng = np.random.default_rng(2)
    d = 8
    var1 = rng.uniform(0.1, 3.0, size=d)
    var2 = rng.uniform(0.1, 3.0, size=d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum(var1 + var2 - 2.0 * np.sqrt(var1 * var2)) + np.sum((mu1 - mu2) ** 2)
    value = fidlib.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert value == pytest.approx(expected, rel=1e-9)


def test_distance_is_symmetric():
    rng = np.random.default_rng(3)
    d = 10
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    forward = fidlib.frechet_distance(mu1, s1, mu2, s2)
    assert forward > 0
    assert forward == pytest.approx(fidlib.frechet_distance(mu2, s2, mu1, s1), rel=1e-8)


def test_singular_covariances_give_finite_non_negative_value():
    rng = np.random.default_rng(4)
    # Fewer samples than dimensions: both covariances have rank ≤ 5 in 64 dimensions.
    act1 = rng.normal(size=(6, 64))
    act2 = rng.normal(size=(6, 64)) + 0.5
    value = fidlib.fid_from_activations(act1, act2)
    assert np.isfinite(value) and value >= 0.0
    # The same rank-deficient set against itself stays at (almost) zero.
    assert fidlib.fid_from_activations(act1, act1) < 1e-3


@pytest.mark.parametrize("rows", [(7, 9), (20, 40)])
def test_fewer_rows_than_features_takes_the_exact_low_rank_route(rows, monkeypatch):
    rng = np.random.default_rng(5)
    act1 = rng.normal(size=(rows[0], 48))
    act2 = 0.7 * rng.normal(size=(rows[1], 48)) + 0.3
    mu1, sigma1 = fidlib.activation_statistics(act1)
    mu2, sigma2 = fidlib.activation_statistics(act2)
    # the d×d square root of the same statistics, offset-free: the singular product is still
    # well within sqrtm's reach at d = 48
    expected = fidlib.frechet_distance(mu1, sigma1, mu2, sigma2, eps=0.0)
    calls = []
    monkeypatch.setattr(fidlib, "frechet_distance", lambda *a, **k: calls.append(a))
    value = fidlib.fid_from_activations(act1, act2)
    assert not calls  # the d×d route was not taken
    assert value == pytest.approx(expected, rel=1e-6)
    assert fidlib.fid_from_activations(act1, act1) == pytest.approx(0.0, abs=1e-9)


def test_activation_statistics_are_float64_mean_and_unbiased_covariance():
    act = np.random.default_rng(5).normal(size=(50, 3)).astype(np.float32)
    mu, sigma = fidlib.activation_statistics(act)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, act.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(sigma, np.cov(act.astype(np.float64), rowvar=False))
    _, sigma_1d = fidlib.activation_statistics(act[:, :1])
    assert sigma_1d.shape == (1, 1)


@pytest.mark.parametrize("args, pattern", [
    ((np.zeros((2, 2)), np.eye(2), np.zeros(2), np.eye(2)), r"mu1 must be a non-empty 1-D"),
    ((np.zeros(3), np.eye(2), np.zeros(3), np.eye(3)), r"sigma1 must be a 3x3 covariance"),
    ((np.zeros(2), np.eye(2), np.zeros(2), np.ones((2, 3))), r"sigma2 must be a 2x2 covariance"),
    ((np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), r"mu1 has length 2 but mu2 has length 3"),
    ((np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2)), r"only finite values"),
])
def test_frechet_distance_shape_errors_are_clear(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        fidlib.frechet_distance(*args)


def test_non_psd_covariance_is_rejected_with_a_sentence():
    # A "covariance" with a negative eigenvalue: its product with I has no real square root.
    bad = np.diag([1.0, -4.0])
    with pytest.raises(ValueError, match=r"imaginary component .* not valid"):
        fidlib.frechet_distance(np.zeros(2), bad, np.zeros(2), np.eye(2))


def test_activation_errors_are_clear():
    with pytest.raises(ValueError, match=r"at least 2 rows"):
        fidlib.activation_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"2-D array \[N, d\]"):
        fidlib.activation_statistics(np.zeros(4))
    with pytest.raises(ValueError, match=r"act1 has 4 features per row but act2 has 5"):
        fidlib.fid_from_activations(np.zeros((3, 4)), np.zeros((3, 5)))


# --- the extractor -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_extractor():
    return fidlib.InceptionFeatures(weights="none")


def _images(seed, n=2, height=40, width=52):
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


def test_random_extractor_gives_2048_features_and_fid_like_label(random_extractor):
    features = random_extractor(_images(0), batch_size=1)
    assert features.shape == (2, fidlib.FEATURE_DIM)
    assert np.all(np.isfinite(features))
    assert random_extractor.metric_name == "fid_like"
    assert random_extractor.name == "fid_like"
    # uint8 and float inputs in [0, 255] are the same images.
    np.testing.assert_allclose(
        random_extractor(_images(0).astype(np.float32)), features, rtol=1e-4, atol=1e-5)


class _MeanColourFeatures:
    """A stand-in extractor (mean RGB per image): fid() accepts any such callable, and the real
    2048-d matrix square root takes tens of seconds on a small CPU."""

    metric_name = "fid_like"

    def __call__(self, images, batch_size=32):
        return np.asarray(images, dtype=np.float64).mean(axis=(1, 2))


def test_fid_reports_value_label_and_counts():
    rng = np.random.default_rng(1)
    real = rng.uniform(0, 255, size=(20, 8, 8, 3))
    generated = rng.uniform(0, 255, size=(30, 8, 8, 3)) * 0.5
    result = fidlib.fid(real, generated, _MeanColourFeatures())
    assert set(result) == {"value", "metric", "num_real", "num_generated"}
    assert result["metric"] == "fid_like"
    assert (result["num_real"], result["num_generated"]) == (20, 30)
    extractor = _MeanColourFeatures()
    assert result["value"] == pytest.approx(
        fidlib.fid_from_activations(extractor(real), extractor(generated)))
    assert result["value"] > 1000.0  # the generated means are about 64 lower per channel


def test_images_outside_0_255_are_rejected(random_extractor):
    scaled = _images(3).astype(np.float32) / 127.5 - 1.0
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        random_extractor(scaled)
    with pytest.raises(ValueError, match=r"shape \[N, H, W, 3\]"):
        random_extractor(np.zeros((2, 8, 8, 4), dtype=np.uint8))


def test_keras_weights_file_is_loaded_and_cannot_claim_published_fid(random_extractor, tmp_path):
    path = str(tmp_path / "inception.weights.h5")
    random_extractor._model.save_weights(path)
    loaded = fidlib.InceptionFeatures(weights=path)
    assert (loaded.network, loaded.metric_name, loaded.standard) == ("keras", "fid_like", False)
    # Same weights as the random extractor, so the same features: the file really was loaded.
    images = _images(4)
    np.testing.assert_allclose(loaded(images), random_extractor(images), rtol=1e-4, atol=1e-5)
    # Keras's InceptionV3 is not the FID graph, whatever weights it holds.
    with pytest.raises(fidlib.InceptionWeightsError, match=r"standard=True demands published FID.*fid_convert"):
        fidlib.InceptionFeatures(weights=path, standard=True)


def test_missing_weights_path_is_named(tmp_path):
    path = str(tmp_path / "nowhere" / "inception.weights.h5")
    with pytest.raises(fidlib.InceptionWeightsError) as info:
        fidlib.InceptionFeatures(weights=path)
    assert path in str(info.value)
    assert isinstance(info.value, PopTfError)


def test_standard_flag_and_the_fid_graph_need_a_converted_file():
    with pytest.raises(fidlib.InceptionWeightsError, match=r"standard=True .* weights=<that file>"):
        fidlib.InceptionFeatures(weights="imagenet", standard=True)
    with pytest.raises(fidlib.InceptionWeightsError, match=r"no Keras ImageNet weights.*fid_convert"):
        fidlib.InceptionFeatures(weights="imagenet", network="fid")
    with pytest.raises(fidlib.InceptionWeightsError, match=r"network must be one of auto, keras, fid"):
        fidlib.InceptionFeatures(weights="none", network="tf")


def test_offline_imagenet_failure_names_the_file_to_place(monkeypatch):
    def offline_inception(*args, **kwargs):
        # What keras.utils.get_file raises when the weights URL cannot be reached.
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/"
            "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5: None -- "
            "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.applications, "InceptionV3", offline_inception)
    with pytest.raises(fidlib.InceptionWeightsError) as info:
        fidlib.InceptionFeatures(weights="imagenet")
    message = str(info.value)
    assert isinstance(info.value, PopTfError)
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 in " in message
    assert os.path.join("models", "") in message
    assert "weights=<path" in message and "weights=none" in message
    # One sentence: a single full stop, at the end.
    assert message.rstrip().endswith(".") and message.count(". ") == 0


# --- the FID graph against pytorch-fid --------------------------------------------------------


# Big enough for every block (pytorch-fid's resize_input=False needs 75); at 299 the two
# forward passes cost ten times as much and test nothing more.
GRAPH_TEST_SIZE = (139, 160)


@pytest.fixture(scope="module")
def pytorch_fid_network():
    """pytorch-fid's InceptionV3 (the FID graph), randomly initialised with calibrated batch norms,
    in eval mode; and its Inception3's state dict, the layout of pt_inception-2015-12-05-*.pth."""
    pytorch_fid = reference("pytorch_fid.inception")
    import torch

    captured = {}
    with pytest.MonkeyPatch.context() as patch:
        # fid_inception_v3() downloads the published weights and loads them; keep its random init.
        patch.setattr(pytorch_fid, "load_state_dict_from_url", lambda *args, **kwargs: None)
        patch.setattr(pytorch_fid.torchvision.models.Inception3, "load_state_dict",
                      lambda module, state, *args, **kwargs: captured.setdefault("inception", module))
        torch.manual_seed(0)
        network = pytorch_fid.InceptionV3([pytorch_fid.InceptionV3.DEFAULT_BLOCK_INDEX])
    # Batch-norm statistics of real activations, as trained weights have: with running means 0 and
    # variances 1 the activations of a random network drift block by block, and scales and shifts
    # far from 1 and 0 make a swapped batch-norm parameter visible.
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one batch sets the statistics
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    calibration = np.random.default_rng(20).uniform(-1, 1, (4, 3) + GRAPH_TEST_SIZE).astype(np.float32)
    network.train()
    with torch.no_grad():
        _blocks(network, calibration)
    network.eval()
    state = {key: value.numpy().copy() for key, value in captured["inception"].state_dict().items()}
    return network, state


def _blocks(network, images_nchw):
    """The pool features of pytorch-fid's network for [-1, 1] images, past its resize and scaling."""
    import torch

    x = torch.from_numpy(images_nchw)
    for block in network.blocks:
        x = block(x)
    return x[:, :, 0, 0].numpy()


@pytest.fixture(scope="module")
def converted_fid_file(pytorch_fid_network, tmp_path_factory):
    """The random pytorch-fid weights as a .pth, converted by the command-line converter."""
    import torch

    folder = tmp_path_factory.mktemp("fid_graph")
    checkpoint = folder / "pt_inception_random.pth"
    torch.save({key: torch.from_numpy(value) for key, value in pytorch_fid_network[1].items()}, checkpoint)
    output = folder / "fid_inception.weights.h5"
    assert fid_convert.main(["--input", str(checkpoint), "--output", str(output)]) == 0
    return str(output)


def test_fid_graph_matches_pytorch_fid(pytorch_fid_network, converted_fid_file):
    # Both networks in float64: float32 round-off alone, amplified through 94 randomly initialised
    # convolutions and batch norms, reaches 1e-4 of the largest feature in torch itself, so only
    # float64 separates a wrong layer from round-off.
    network = copy.deepcopy(pytorch_fid_network[0]).double()
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        model = fid_inception.fid_inception(input_size=None)
    finally:
        keras.config.set_dtype_policy(policy)
    model.load_weights(converted_fid_file)
    images = np.random.default_rng(21).uniform(-1, 1, (2,) + GRAPH_TEST_SIZE + (3,))
    expected = _blocks(network, images.transpose(0, 3, 1, 2))
    features = np.asarray(model(images, training=False))
    assert features.shape == (2, fidlib.FEATURE_DIM) and features.dtype == np.float64
    scale = float(np.abs(expected).max())
    assert np.abs(features - expected).max() <= 1e-4 * scale, np.abs(features - expected).max() / scale
    # The block that differs from Keras's InceptionV3: pytorch-fid's FIDInceptionE_2 max-pools.
    assert model.get_layer("Mixed_7c_pool").__class__.__name__ == "MaxPooling2D"
    assert model.get_layer("Mixed_7b_pool").__class__.__name__ == "AveragePooling2D"


def test_resize_and_scaling_match_pytorch_fid():
    pytorch_fid = reference("pytorch_fid.inception")
    import torch

    # pytorch-fid's InceptionV3.forward with an identity network: only its resize and scaling run.
    network = pytorch_fid.InceptionV3.__new__(pytorch_fid.InceptionV3)
    torch.nn.Module.__init__(network)
    network.resize_input, network.normalize_input = True, True
    network.output_blocks, network.last_needed_block = [0], 0
    network.blocks = torch.nn.ModuleList([torch.nn.Identity()])
    rng = np.random.default_rng(22)
    for height, width in ((64, 90), (331, 420)):  # up- and down-sampling
        images = rng.integers(0, 256, (2, height, width, 3)).astype(np.float32)
        with torch.no_grad():
            expected = network(torch.from_numpy(images.transpose(0, 3, 1, 2) / 255.0))[0].numpy()
        prepared = np.asarray(fidlib.prepare_images(images))
        assert prepared.shape == (2, 299, 299, 3)
        # Round-off of the sampling positions only: one grey level is 2/255 ≈ 8e-3 here.
        np.testing.assert_allclose(prepared, expected.transpose(0, 2, 3, 1), atol=1e-5)


def test_converted_file_selects_the_fid_graph_and_only_the_published_hash_is_fid(
        pytorch_fid_network, converted_fid_file, tmp_path):
    extractor = fidlib.InceptionFeatures(converted_fid_file)
    assert (extractor.network, extractor.metric_name, extractor.standard) == ("fid", "fid_like", False)
    with pytest.raises(fidlib.InceptionWeightsError, match="standard=True demands published FID"):
        fidlib.InceptionFeatures(converted_fid_file, standard=True)
    with pytest.raises(fidlib.InceptionWeightsError, match="holds the FID Inception graph"):
        fidlib.InceptionFeatures(converted_fid_file, network="keras")
    # The same file, as converted from a .pth whose SHA-256 starts with the published prefix.
    published = str(tmp_path / "published.weights.h5")
    shutil.copy(converted_fid_file, published)
    with h5py.File(published, "a") as f:
        f.attrs[fid_inception.SOURCE_SHA256_ATTRIBUTE] = fid_inception.PUBLISHED_SHA256_PREFIX + "0" * 56
    standard = fidlib.InceptionFeatures(published, standard=True)
    assert (standard.network, standard.metric_name, standard.standard) == ("fid", "fid", True)
    # The converted weights are in the extractor's network, and it runs end to end.
    state = pytorch_fid_network[1]
    np.testing.assert_array_equal(standard._model.get_layer("Mixed_7c_branch_pool_conv").get_weights()[0],
                                  state["Mixed_7c.branch_pool.conv.weight"].transpose(2, 3, 1, 0))
    features = standard(_images(23, n=1))
    assert features.shape == (1, fidlib.FEATURE_DIM) and np.all(np.isfinite(features))


def test_fid_converter_rejects_other_checkpoints(pytorch_fid_network):
    state = dict(pytorch_fid_network[1])
    layers = fid_convert.keras_weights_from_state_dict(state)
    # Every BasicConv2d becomes a Keras convolution and batch norm; fc (1008 classes) is dropped.
    assert len(layers) == 2 * sum(key.endswith(".conv.weight") for key in state)
    np.testing.assert_array_equal(layers["Mixed_7c_branch_pool_conv"][0],
                                  state["Mixed_7c.branch_pool.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layers["Conv2d_1a_3x3_bn"][3], state["Conv2d_1a_3x3.bn.running_var"])
    for change, message in [
        (lambda s: s.pop("Mixed_6b.branch1x1.bn.running_var"), "no Mixed_6b.branch1x1.bn.running_var"),
        (lambda s: s.update({"layer1.0.conv1.weight": np.zeros((64, 64, 3, 3), np.float32)}), "layer1.0.conv1"),
        (lambda s: s.update({"Mixed_5b.branch1x1.bn.bias": np.zeros(7, np.float32)}), "64 output channels"),
        (lambda s: s["Conv2d_2a_3x3.conv.weight"].__setitem__((0, 0, 0, 0), np.nan), "non-finite"),
    ]:
        broken = {key: value.copy() for key, value in state.items()}
        change(broken)
        with pytest.raises(ConversionError, match=message):
            fid_convert.keras_weights_from_state_dict(broken)
    model = fid_inception.fid_inception()
    partial = {key: value for key, value in state.items() if not key.startswith("Mixed_7c.")}
    with pytest.raises(ConversionError, match="no weights for Mixed_7c"):
        fid_convert.set_model_weights(model, fid_convert.keras_weights_from_state_dict(partial))


def test_fid_converter_cli_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    output = str(tmp_path / "out.weights.h5")
    assert fid_convert.main(["--output", output]) == 2
    err = capsys.readouterr().err
    assert os.path.join(str(tmp_path / "torch"), "hub", "checkpoints", fid_inception.PUBLISHED_FILE) in err
    assert fid_inception.PUBLISHED_URL in err
    checkpoint = tmp_path / "pt_inception.pth"
    checkpoint.write_bytes(b"fake")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert fid_convert.main(["--input", str(checkpoint), "--output", output]) == 2
    assert "pip install" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fid_convert.main(["--input", str(checkpoint), "--output", str(tmp_path / "out.h5")])
    assert not os.path.exists(output)
