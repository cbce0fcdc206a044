"""Red team, class 6a: image arrays of another dtype than uint8 are refused by the loaded SavedModels.

A `tf.function` whose input is declared `TensorSpec(None, tf.uint8)` converts a NumPy float32
array with a plain cast before the graph runs, so a float image in [0, 1] scored exactly like a
black one. Every endpoint that takes images (`score`, `embed`, `assign`, `translate`, `sample`)
is exercised here through `tf.saved_model.load`, as another app loads it, with generated arrays
of every other dtype (and tensors, and each image argument of `translate` in turn): each call
must raise, none may return. uint8 arrays still give the same answers as before, and the
signatures stay uint8 for TF Serving.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from pop_tf import config as config_lib
from pop_tf import serving
from pop_tf.models import ranker as ranker_lib
from pop_tf.models.clusterer import ClusterFeatures, fit_clusters
from pop_tf.stages import train_translator
from tests.conftest import tiny_config

SIZE = 32
# NumPy dtypes a caller may hold images in; bfloat16 arrays come from ml_dtypes (TensorFlow's).
NUMPY_DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
                "bool", "complex64", tf.bfloat16.as_numpy_dtype]
# Values that are valid pixels when read as uint8, so a silent cast would return plausible output.
PIXEL_VALUES = {"bool": True}


def _array(dtype, shape=(2, 12, 10, 3), seed=0):
    """An image-shaped array of `dtype` holding values a cast to uint8 would keep: 0..1 or 0..255."""
    rng = np.random.default_rng(seed)
    name = np.dtype(dtype).name
    if name == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if name.startswith(("float", "complex", "bfloat")):
        return rng.random(shape).astype(dtype)  # a float image in [0, 1]: cast, it turned black
    return rng.integers(0, 128, shape).astype(dtype)


def _uint8(shape=(2, 12, 10, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def _refused(call):
    """The error a call raised; failing the test when it returned."""
    try:
        result = call()
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
        return error
    pytest.fail(f"returned {tf.nest.map_structure(lambda t: getattr(t, 'dtype', t), result)} instead of an error")


def _assert_names(error, argument, dtype_name):
    """An InvalidArgumentError names the argument and its dtype; a ValueError (no matching trace) the dtypes."""
    text = error.message if isinstance(error, tf.errors.InvalidArgumentError) else str(error)
    assert "uint8" in text, text
    if isinstance(error, tf.errors.InvalidArgumentError):
        assert f"{argument} as {dtype_name}" in text and "must be uint8 images" in text, text
        assert "np.round" in text, text
    else:
        assert dtype_name in text, text


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("dtype_models")
    keras.utils.set_random_seed(0)
    ranker = ranker_lib.PopularityRanker(ranker_lib.build_backbone("small", "none", SIZE, small_width=4))
    ranker(tf.zeros([1, SIZE, SIZE, 3]))
    ranker_dir = serving.export_ranker(ranker, str(root / "ranker"), {"image_size": SIZE}, "")
    features = ClusterFeatures(weights="none", feature_size=SIZE)
    stats = fit_clusters(features(_uint8((12, SIZE, SIZE, 3), seed=1)).numpy(), 2, seed=0)
    clusterer_dir = serving.export_clusterer(features, stats, str(root / "clusterer"), {"num_clusters": 2}, "")
    cfg = tiny_config().train_translator
    translator_dir = serving.export_translator(train_translator.build_dmit(cfg), str(root / "translator"),
                                               config_lib.to_dict(cfg), "")
    # Loaded as another app loads them: tf.saved_model.load, nothing of pop_tf on the call path.
    return {"ranker": tf.saved_model.load(ranker_dir), "clusterer": tf.saved_model.load(clusterer_dir),
            "translator": tf.saved_model.load(translator_dir)}


def _single_image_calls(models):
    """{endpoint: call(images)} for every endpoint with one image argument."""
    ranker, clusterer, translator = models["ranker"], models["clusterer"], models["translator"]

    def sample(images):
        return translator.sample(content=images, target_domain=tf.constant(["popular/color"] * len(images)),
                                 seed=tf.constant(3, tf.int64), num_samples=tf.constant(2))

    def translate_content(images):
        return translator.translate(content=images, reference=_uint8(images.shape),
                                    target_domain=tf.constant(["popular/color"] * len(images)))

    def translate_reference(images):
        return translator.translate(content=_uint8(images.shape), reference=images,
                                    target_domain=tf.constant(["popular/color"] * len(images)))

    def translate_positional(images):  # positional arguments take the same path as keywords
        return translator.translate(images, images, tf.constant(["popular/color"] * len(images)))

    return {("score", "images"): ranker.score, ("embed", "images"): clusterer.embed,
            ("assign", "images"): clusterer.assign, ("sample", "content"): sample,
            ("translate", "content"): translate_content, ("translate", "reference"): translate_reference,
            ("translate", "content and reference"): translate_positional}


def test_every_image_endpoint_refuses_every_other_numpy_dtype(models):
    attempts = 0
    for ((endpoint, argument), call), dtype in itertools.product(_single_image_calls(models).items(), NUMPY_DTYPES):
        images = _array(dtype)
        error = _refused(lambda: call(images))
        name = np.dtype(dtype).name
        if argument == "content and reference":
            assert isinstance(error, tf.errors.InvalidArgumentError), (endpoint, name, error)
            assert f"content as {name}" in error.message and f"reference as {name}" in error.message
        else:
            assert isinstance(error, tf.errors.InvalidArgumentError), (endpoint, name, error)
            _assert_names(error, argument, name)
        attempts += 1
    assert attempts == 7 * len(NUMPY_DTYPES)


def test_tensors_of_another_dtype_are_refused_the_same_way(models):
    for ((endpoint, argument), call), dtype in itertools.product(
            _single_image_calls(models).items(), ["float32", "int32", "bool", "uint16"]):
        error = _refused(lambda: call(tf.constant(_array(dtype))))
        assert isinstance(error, tf.errors.InvalidArgumentError), (endpoint, dtype, error)
        assert "must be uint8 images" in error.message and dtype in error.message


def test_translate_with_two_different_wrong_dtypes_is_an_error_too(models):
    translator = models["translator"]
    target = tf.constant(["popular/color"] * 2)
    for content, reference in itertools.permutations(["float32", "int32", "bool", "float64"], 2):
        error = _refused(lambda: translator.translate(content=_array(content), reference=_array(reference),
                                                      target_domain=target))
        _assert_names(error, "content", content)
        text = error.message if isinstance(error, tf.errors.InvalidArgumentError) else str(error)
        assert reference in text


def test_a_float_image_is_not_scored_as_black(models):
    """The report's case: a float image in [0, 1] used to score exactly like a black image."""
    ranker = models["ranker"]
    image = _array("float32", (1, SIZE, SIZE, 3), seed=5)
    error = _refused(lambda: ranker.score(image))
    assert "images as float32" in error.message
    # The conversion the message gives works, and differs from black.
    converted = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    assert ranker.score(converted)["score"].numpy()[0] != ranker.score(np.zeros_like(converted))["score"].numpy()[0]


def test_python_float_lists_are_refused(models):
    images = _array("float32", (1, 4, 4, 3)).tolist()
    for (endpoint, argument), call in _single_image_calls(models).items():
        if argument != "images":
            continue
        error = _refused(lambda: call(images))
        _assert_names(error, argument, "float32")


def test_uint8_arrays_still_work_and_the_signatures_stay_uint8(models):
    ranker, clusterer, translator = models["ranker"], models["clusterer"], models["translator"]
    images = _uint8((3, 20, 24, 3), seed=2)
    scores = ranker.score(images)["score"].numpy()
    np.testing.assert_allclose(scores, ranker.signatures["score"](images=tf.constant(images))["score"].numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(ranker.score(images[:1])["score"].numpy(), scores[:1], atol=1e-5)  # another shape
    assert ranker.score(images.tolist())["score"].shape == (3,)  # a list of ints 0..255 is uint8
    assert clusterer.assign(images)["cluster"].dtype == tf.int32
    assert clusterer.embed(tf.constant(images))["features"].shape[0] == 3
    target = tf.constant(["popular/color"] * 3)
    assert translator.translate(images, images[::-1], target)["images"].dtype == tf.uint8
    sampled = translator.sample(content=images, target_domain=target, seed=7, num_samples=2)["images"]
    assert sampled.shape == (3, 2, SIZE, SIZE, 3)
    for model, names in ((ranker, ["score", "score_jpeg"]), (clusterer, ["embed", "assign"]),
                         (translator, ["translate", "sample", "domains"])):
        for name in names:
            inputs = model.signatures[name].structured_input_signature[1]
            images_in = {key: spec.dtype for key, spec in inputs.items() if key in ("images", "content", "reference")}
            assert set(images_in.values()) <= {tf.uint8}, (name, images_in)
        assert "serving_default" in model.signatures


def test_static_shapes_of_a_call_still_reach_the_checks_and_their_messages(models):
    """Without an input signature a call's static shapes reach the saved graph; the uint8 trace hides
    them again, so shape inference cannot fail ahead of the checks with a reshape error."""
    ranker, clusterer, translator = models["ranker"], models["clusterer"], models["translator"]
    target = tf.constant(["popular/color"] * 2)
    cases = {
        "got a different channel count": [lambda: ranker.score(_uint8((1, 8, 8, 2))),
                                          lambda: clusterer.assign(_uint8((1, 8, 8, 4))),
                                          lambda: translator.translate(_uint8((2, 8, 8, 3)), _uint8((2, 8, 8, 1)),
                                                                       target)],
        "got a different rank": [lambda: ranker.score(_uint8((8, 8, 3))), lambda: clusterer.embed(_uint8((1, 1, 8, 8, 3)))],
        "got an empty batch": [lambda: ranker.score(_uint8((0, 8, 8, 3)))],
        "same number N": [lambda: translator.translate(_uint8((2, 8, 8, 3)), _uint8((1, 8, 8, 3)), target),
                          lambda: translator.sample(_uint8((3, 8, 8, 3)), target, 0, 1)],
    }
    for expected, calls in cases.items():
        for call in calls:
            error = _refused(call)
            assert isinstance(error, tf.errors.InvalidArgumentError) and expected in error.message, (expected, error)
