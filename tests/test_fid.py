"""Tests of the FID maths and the InceptionV3 feature extractor (pop_tf.metrics.fid, docs/metrics.md).

Nothing is downloaded: the extractor is built with weights="none", and the offline ImageNet case
is simulated by making keras.applications.InceptionV3 raise what Keras raises without network.
"""

import os

import keras
import numpy as np
import pytest

from pop_tf.errors import PopTfError
from pop_tf.metrics import fid as fidlib


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


def test_standard_weights_file_is_loaded_and_labelled_fid(random_extractor, tmp_path):
    path = str(tmp_path / "inception_2015_12_05.weights.h5")
    random_extractor._model.save_weights(path)
    standard = fidlib.InceptionFeatures(weights=path, standard=True)
    assert standard.metric_name == "fid"
    # Same weights as the random extractor, so the same features: the file really was loaded.
    images = _images(4)
    np.testing.assert_allclose(standard(images), random_extractor(images), rtol=1e-4, atol=1e-5)


def test_missing_weights_path_is_named(tmp_path):
    path = str(tmp_path / "nowhere" / "inception.weights.h5")
    with pytest.raises(fidlib.InceptionWeightsError) as info:
        fidlib.InceptionFeatures(weights=path)
    assert path in str(info.value)
    assert isinstance(info.value, PopTfError)


def test_standard_flag_needs_a_path():
    with pytest.raises(fidlib.InceptionWeightsError, match=r"standard=True .* weights=<path"):
        fidlib.InceptionFeatures(weights="imagenet", standard=True)


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
