"""Tests of the cluster-conditioned pix2pix GAN (pop_tf.models.pix2pix, Suzuki et al. 2022).

Tiny configuration throughout: 32×32 images, base_filters 8, K = 3 clusters, 49-d features
from a small conv model standing in for EfficientNet-B0.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from pop_tf import losses as L
from pop_tf.models.pix2pix import ClusterPix2Pix, MultiScaleDiscriminator, UNetGenerator

S, K, D, NZ = 32, 3, 49, 8
SHARES = np.array([0.5, 0.3, 0.2])


def _unwrapped_kernels(model):
    """Names of conv / transposed-conv / dense layers NOT inside a SpectralNormalization."""
    found = list(model._flatten_layers(include_self=False, recursive=True))
    wrapped = {id(layer.layer) for layer in found
               if isinstance(layer, keras.layers.SpectralNormalization)}
    kinds = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)
    kernels = [layer for layer in found if isinstance(layer, kinds)]
    assert kernels
    return [layer.name for layer in kernels if id(layer) not in wrapped]


def _networks(seed=0):
    keras.utils.set_random_seed(seed)
    generator = UNetGenerator(S, base_filters=8, num_clusters=K, noise_dim=NZ)
    discriminator = MultiScaleDiscriminator(base_filters=8, num_layers=2, num_clusters=K)
    return generator, discriminator


def _feature_extractor():
    # Batch norm makes "frozen" observable: training-mode calls would move its statistics.
    return keras.Sequential([
        keras.Input((S, S, 3)),
        keras.layers.Conv2D(4, 3, strides=2),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        keras.layers.Dense(D),
    ], name="tiny_extractor")


def _statistics(rng):
    covariances = []
    for _ in range(K):
        a = rng.normal(size=(D, 2 * D))
        covariances.append(a @ a.T / (2 * D))
    masks = np.zeros((K, D), np.float32)
    masks[0] = 1
    masks[1, :20] = 1
    masks[2, 5:40] = 1
    means = rng.normal(size=(K, D)).astype(np.float32)
    return means, np.asarray(L.masked_inverse_covariances(np.stack(covariances), masks)), masks


def _trainer(diversity="clusters", warmup=0, seed=0):
    generator, discriminator = _networks(seed)
    means, precision, masks = _statistics(np.random.default_rng(seed))
    extractor = _feature_extractor()
    model = ClusterPix2Pix(
        generator, discriminator, diversity=diversity, feature_extractor=extractor,
        cluster_means=means, inverse_covariances=precision, feature_masks=masks,
        cluster_shares=SHARES, mahalanobis_warmup_steps=warmup, seed=seed)
    model.compile(g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
                  d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))
    return model, extractor


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "edge": rng.uniform(-1, 1, (n, S, S, 3)).astype(np.float32),
        "image": rng.uniform(-1, 1, (n, S, S, 3)).astype(np.float32),
        "cluster": rng.integers(0, K, n).astype(np.int32),
    }


def _snapshot(variables):
    return [np.asarray(v).copy() for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, np.asarray(v)) for b, v in zip(before, variables)]


# --- networks -----------------------------------------------------------------------------------


def test_generator_output_shape_range_and_conditioning():
    generator, _ = _networks()
    rng = np.random.default_rng(0)
    edge = rng.uniform(-1, 1, (2, S, S, 3)).astype(np.float32)
    onehot = np.eye(K, dtype=np.float32)[[0, 1]]
    z = rng.normal(size=(2, NZ)).astype(np.float32)
    out = np.asarray(generator({"edge": edge, "noise": z, "cluster_onehot": onehot}))
    assert out.shape == (2, S, S, 3) and np.all(np.abs(out) <= 1.0)
    other_z = np.asarray(generator({"edge": edge, "noise": -z, "cluster_onehot": onehot}))
    other_cluster = np.asarray(
        generator({"edge": edge, "noise": z, "cluster_onehot": onehot[::-1]}))
    assert np.abs(out - other_z).max() > 1e-4
    assert np.abs(out - other_cluster).max() > 1e-4
    # "add_all": the code joins the input of every encoder level (depth = log2(32) = 5).
    injections = [layer for layer in generator.layers if layer.name.endswith("_add_code")]
    assert len(injections) == generator.depth == 5


def test_generator_depth_follows_the_image_size_down_to_1x1():
    big = UNetGenerator(256, base_filters=4, num_clusters=K)
    assert big.depth == 8
    assert big.get_layer("down7").output.shape[1:3] == (1, 1)
    assert big.output.shape[1:] == (256, 256, 3)
    with pytest.raises(ValueError, match="image_size"):
        UNetGenerator(48, base_filters=4, num_clusters=K)


def test_discriminator_patch_sizes_and_conditioning():
    _, discriminator = _networks()
    rng = np.random.default_rng(1)
    inputs = {
        "edge": rng.uniform(-1, 1, (2, S, S, 3)).astype(np.float32),
        "image": rng.uniform(-1, 1, (2, S, S, 3)).astype(np.float32),
        "cluster_onehot": np.eye(K, dtype=np.float32)[[0, 2]],
    }
    outputs = discriminator(inputs)
    sizes = MultiScaleDiscriminator.patch_sizes(S, 2, 2)
    assert [tuple(o.shape) for o in outputs] == [(2, s, s, 1) for s in sizes] == [
        (2, 6, 6, 1), (2, 2, 2, 1)]
    swapped = discriminator({**inputs, "cluster_onehot": inputs["cluster_onehot"][::-1]})
    assert np.abs(np.asarray(outputs[0]) - np.asarray(swapped[0])).max() > 0
    # The paper's 256² with 3 layers gives PatchGAN's 30×30 and a 14×14 second scale.
    assert MultiScaleDiscriminator.patch_sizes(256, 2, 3) == [30, 14]


def test_every_conv_of_both_networks_is_spectrally_normalised():
    generator, discriminator = _networks()
    assert _unwrapped_kernels(generator) == []
    assert _unwrapped_kernels(discriminator) == []


def test_network_get_config_round_trips():
    generator, discriminator = _networks()
    for network in (generator, discriminator):
        config = network.get_config()
        clone = type(network).from_config(config)
        assert clone.get_config() == config
        assert clone.count_params() == network.count_params()
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(network))
        assert type(restored) is type(network) and restored.get_config() == config


# --- trainer ------------------------------------------------------------------------------------


def test_trainer_rejects_bad_arguments_by_name():
    generator, discriminator = _networks()
    with pytest.raises(ValueError, match="diversity"):
        ClusterPix2Pix(generator, discriminator, diversity="lots")
    with pytest.raises(ValueError, match="feature_extractor"):
        ClusterPix2Pix(generator, discriminator, diversity="clusters")
    with pytest.raises(ValueError, match="cluster_shares"):
        ClusterPix2Pix(generator, discriminator, diversity="ms", cluster_shares=[1.0, -1.0, 1.0])
    too_deep = MultiScaleDiscriminator(base_filters=8, num_layers=3, num_clusters=K)
    with pytest.raises(ValueError, match="num_layers"):
        ClusterPix2Pix(generator, too_deep, diversity="none")
    model = ClusterPix2Pix(generator, discriminator, diversity="none")
    optimizer = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="two optimizer instances"):
        model.compile(optimizer, optimizer)


def _slot_sources(optimizer):
    """Variable paths that an Adam optimizer holds momentum/velocity slots for."""
    slots = [v.path.split("/", 1)[1] for v in optimizer.variables]
    return {name.rsplit("_", 1)[0] for name in slots if name.endswith(("_momentum", "_velocity"))}


def test_one_optimizer_per_network_and_none_for_the_feature_extractor():
    model, extractor = _trainer()
    extractor_ids = {id(v) for v in extractor.weights}
    trainer_ids = {id(v) for v in model.trainable_variables}
    assert not extractor_ids & trainer_ids
    assert trainer_ids == {id(v) for v in model.generator.trainable_variables
                           + model.discriminator.trainable_variables}
    for optimizer, network in ((model.g_optimizer, model.generator),
                               (model.d_optimizer, model.discriminator)):
        assert _slot_sources(optimizer) == {
            v.path.replace("/", "_") for v in network.trainable_variables}
        assert len(optimizer.variables) == 2 + 2 * len(network.trainable_variables)
    # Keras callbacks (TensorBoard) see the generator's optimizer.
    assert model.optimizer is model.g_optimizer


@pytest.mark.parametrize("term", ["mode_seeking_loss", "cluster_mean_loss", "mahalanobis_loss"])
def test_each_diversity_loss_sends_gradients_to_the_generator_only(term):
    model, extractor = _trainer("clusters")
    edge, image, cluster, onehot = model._unpack(_batch())
    noise = model._noise(4, stream=0)
    tape, watched, _, losses = model._generator_forward(edge, image, cluster, onehot, noise)
    discriminator_vars = [v.value for v in model.discriminator.trainable_variables]
    extractor_vars = [v.value for v in extractor.trainable_variables]
    gradients = tape.gradient(losses[term], {
        "generator": watched, "discriminator": discriminator_vars, "extractor": extractor_vars})
    assert all(g is None for g in gradients["discriminator"])
    assert all(g is None for g in gradients["extractor"])
    assert all(g is not None for g in gradients["generator"])
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in gradients["generator"]) > 0
    # The term does not even depend on D, and reaches E only through G's images.
    with tf.GradientTape() as plain:
        fakes = model._generate(edge, onehot, noise, training=False)
        value = model._generator_losses(edge, image, cluster, onehot, fakes, noise)[term]
    assert all(g is None for g in plain.gradient(value, discriminator_vars))


def test_d_step_changes_only_d_and_g_step_changes_only_g():
    model, extractor = _trainer("clusters", warmup=0)
    networks = {"G": model.generator.variables, "D": model.discriminator.variables,
                "E": extractor.variables}
    edge, image, cluster, onehot = model._unpack(_batch())
    noise = model._noise(4, stream=0)
    fakes = model._generate(edge, onehot, noise, training=False)

    before = {name: _snapshot(v) for name, v in networks.items()}
    model._d_step(edge, image, onehot, fakes)
    changed = {name: _changed(before[name], v) for name, v in networks.items()}
    assert any(changed["D"]) and not any(changed["G"]) and not any(changed["E"])

    before = {name: _snapshot(v) for name, v in networks.items()}
    model._g_step(edge, image, cluster, onehot, noise)
    changed = {name: _changed(before[name], v) for name, v in networks.items()}
    assert any(changed["G"]) and not any(changed["D"]) and not any(changed["E"])


def test_mahalanobis_loss_switches_on_after_warmup_without_retracing():
    model, _ = _trainer("clusters", warmup=2)
    edge, image, cluster, onehot = model._unpack(_batch())
    noise = model._noise(4, stream=0)
    fakes = model._generate(edge, onehot, noise, training=False)

    @tf.function
    def losses():
        return model._generator_losses(edge, image, cluster, onehot, fakes, noise)

    early = losses()
    model.step_counter.assign(2)
    late = losses()
    assert losses.experimental_get_tracing_count() == 1
    m = float(early["mahalanobis_loss"])
    assert m > 0 and float(late["mahalanobis_loss"]) == pytest.approx(m)
    assert float(late["g_loss"]) - float(early["g_loss"]) == pytest.approx(0.2 * m, rel=1e-4)


@pytest.mark.parametrize("diversity,expected", [
    ("none", {"g_loss", "d_loss", "adversarial_loss", "l1_loss"}),
    ("ms", {"g_loss", "d_loss", "adversarial_loss", "l1_loss", "mode_seeking_loss"}),
    ("clusters", {"g_loss", "d_loss", "adversarial_loss", "l1_loss", "mode_seeking_loss",
                  "cluster_mean_loss", "mahalanobis_loss"}),
])
def test_fit_one_epoch_logs_the_loss_trackers(diversity, expected):
    model, extractor = _trainer(diversity, warmup=1)
    frozen = _snapshot(extractor.variables)
    dataset = tf.data.Dataset.from_tensor_slices(_batch(n=8, seed=1)).batch(4)
    history = model.fit(dataset, epochs=1, validation_data=dataset.take(1), shuffle=False,
                        verbose=0)
    assert set(history.history) == expected | {f"val_{name}" for name in expected}
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert int(model.step_counter.numpy()) == 2
    assert int(model.g_optimizer.iterations.numpy()) == 2
    assert int(model.d_optimizer.iterations.numpy()) == 2
    assert not any(_changed(frozen, extractor.variables))
    # call() exists so Keras and tf.distribute can build and run the wrapper model.
    assert tuple(model(_batch(n=2)).shape) == (2, S, S, 3)


def test_sampled_cluster_ids_follow_the_shares():
    model, _ = _trainer("ms")
    ids = np.asarray(model.draw_clusters(2000, seed=7))
    counts = np.bincount(ids, minlength=K)
    assert scipy.stats.chisquare(counts, SHARES * 2000).pvalue > 0.01
    # The test can tell: uniform shares are rejected on the same draws.
    assert scipy.stats.chisquare(counts, np.full(K, 2000 / K)).pvalue < 1e-6


def test_sample_is_deterministic_for_a_seed():
    model, _ = _trainer("ms")
    edges = _batch(n=2)["edge"]
    images, ids = model.sample(edges, seed=3, num_samples=3)
    assert tuple(images.shape) == (2, 3, S, S, 3) and tuple(ids.shape) == (2, 3)
    again, again_ids = model.sample(edges, seed=3, num_samples=3)
    np.testing.assert_array_equal(np.asarray(images), np.asarray(again))
    np.testing.assert_array_equal(np.asarray(ids), np.asarray(again_ids))
    other, _ = model.sample(edges, seed=4, num_samples=3)
    assert np.abs(np.asarray(images) - np.asarray(other)).max() > 1e-4
    fixed, fixed_ids = model.sample(edges, clusters=[2, 0], seed=3, num_samples=2)
    np.testing.assert_array_equal(np.asarray(fixed_ids), [[2, 2], [0, 0]])
    with pytest.raises(ValueError, match="clusters"):
        model.sample(edges, clusters=[5, 0])


def test_same_seed_builds_the_same_trainer():
    first, _ = _trainer("ms", seed=5)
    second, _ = _trainer("ms", seed=5)
    edges = _batch(n=1)["edge"]
    np.testing.assert_array_equal(np.asarray(first.sample(edges, seed=1)[0]),
                                  np.asarray(second.sample(edges, seed=1)[0]))


def test_fit_under_a_two_replica_mirrored_strategy():
    # Two logical CPUs must be configured before TensorFlow starts: run in a fresh process.
    script = textwrap.dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from test_pix2pix import _batch, _trainer
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model, _ = _trainer("clusters")
        dataset = tf.data.Dataset.from_tensor_slices(_batch(n=8, seed=1)).batch(4)
        history = model.fit(dataset, epochs=1, shuffle=False, verbose=0)
        assert all(tf.math.is_finite(v[0]) for v in history.history.values()), history.history
        assert int(model.step_counter.numpy()) == 2
        assert int(model.g_optimizer.iterations.numpy()) == 2
        print("OK", sorted(history.history))
    """)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
