"""Tests of the DMIT translator (pop_tf.models.dmit and dmit_trainer, Yu et al. 2019).

Tiny configuration throughout: 32×32 images, base_filters 8, one content and two decoder
residual blocks, 3-block discriminators, label_dim 4 (popularity one-hot + modality one-hot),
one image per domain per batch row.
"""

import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from pop_tf import losses as L
from pop_tf.layers import CentralBiasingInstanceNorm
from pop_tf.models import dmit, dmit_trainer

S, LABELS, STYLE, K, D = 32, 4, 8, 3, 49
TINY = dict(label_dim=LABELS, style_dim=STYLE, base_filters=8, content_residual_blocks=1,
            decoder_residual_blocks=2, style_blocks=3, content_d_blocks=3, image_d_blocks=3)
# Domains as attribute vectors [unpopular, popular, edge, color].
UNPOPULAR_COLOR = np.array([1, 0, 0, 1], np.float32)
POPULAR_COLOR = np.array([0, 1, 0, 1], np.float32)
POPULAR_EDGE = np.array([0, 1, 1, 0], np.float32)


def _networks(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    return dmit.build_networks(**{**TINY, **overrides})


# Fewer blocks where only the wiring is under test: tracing fit's step graph dominates the time.
SHALLOW = dict(content_residual_blocks=0, decoder_residual_blocks=1, style_blocks=2,
               image_d_blocks=2, content_d_blocks=2)


def _trainer(seed=0, share=False, diversity="dmit", widths=None, **kwargs):
    num_clusters = K if diversity == "clusters" else 0
    networks = _networks(seed, share_discriminator=share, num_clusters=num_clusters,
                         **(widths or {}))
    model = dmit_trainer.DMITTrainer(**networks, share_discriminator=share, diversity=diversity,
                             seed=seed, **kwargs)
    model.compile(dmit_trainer.make_optimizers(share_discriminator=share))
    return model


def _batch(n=1, seed=0, clusters=False):
    rng = np.random.default_rng(seed)
    data = {
        "image_a": rng.uniform(-1, 1, (n, S, S, 3)).astype(np.float32),
        "label_a": np.tile(UNPOPULAR_COLOR, (n, 1)),
        "image_b": rng.uniform(-1, 1, (n, S, S, 3)).astype(np.float32),
        "label_b": np.tile(POPULAR_COLOR, (n, 1)),
    }
    if clusters:
        data["cluster_a"] = rng.integers(0, K, n).astype(np.int32)
        data["cluster_b"] = rng.integers(0, K, n).astype(np.int32)
    return data


def _unwrapped_kernels(model):
    """Names of conv / transposed-conv / dense layers NOT inside a SpectralNormalization."""
    found = list(model._flatten_layers(include_self=False, recursive=True))
    wrapped = {id(layer.layer) for layer in found
               if isinstance(layer, keras.layers.SpectralNormalization)}
    kinds = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)
    kernels = [layer for layer in found if isinstance(layer, kinds)]
    assert kernels
    return [layer.name for layer in kernels if id(layer) not in wrapped]


def _snapshot(model):
    """Copies of every variable (trainable or not) of every network, by network name."""
    networks = {"E_c": model.content_encoder, "E_s": model.style_encoder, "G": model.generator,
                "D_c": model.content_discriminator, "D_prior": model.prior_discriminator}
    if model.encoded_discriminator is not None:
        networks["D_enc"] = model.encoded_discriminator
    return {name: [np.asarray(v).copy() for v in net.variables]
            for name, net in networks.items()}, networks


def _changed_networks(model, step):
    before, networks = _snapshot(model)
    step()
    return {name for name, net in networks.items()
            if any(not np.array_equal(b, np.asarray(v))
                   for b, v in zip(before[name], net.variables))}


# --- networks -----------------------------------------------------------------------------------


def test_output_shapes_of_every_network():
    nets = _networks()
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, S, S, 3)).astype(np.float32)
    labels = tf.constant(np.stack([UNPOPULAR_COLOR, POPULAR_EDGE]))
    content = nets["content_encoder"](images)
    assert tuple(content.shape) == (2, S // 4, S // 4, 32)  # base · 2^2 channels at S/4
    style, mu, logvar = nets["style_encoder"](
        {"image": tf.constant(images), "noise": tf.zeros((2, STYLE))})
    assert [tuple(t.shape) for t in (style, mu, logvar)] == [(2, STYLE)] * 3
    np.testing.assert_allclose(np.asarray(style), np.asarray(mu), rtol=0, atol=0)
    out = np.asarray(nets["generator"]({"content": content, "label": labels, "style": style}))
    assert out.shape == (2, S, S, 3) and np.all(np.abs(out) <= 1.0)
    patches = nets["prior_discriminator"]({"image": tf.constant(images), "label": labels})
    assert [tuple(p.shape) for p in patches] == [(2, 4, 4, 1), (2, 2, 2, 1)]
    assert dmit.image_patch_sizes(S, 2, 3) == [4, 2]
    assert tuple(nets["content_discriminator"]({"content": content, "label": labels}).shape) == (
        2, 1, 1, 1)
    # The paper's sizes: 32² and 16² image patches, a 2×2 content patch at 256².
    assert dmit.image_patch_sizes(256, 2, 3) == [32, 16]
    assert dmit.content_patch_size(256, 2, 5) == 2


def test_style_encoder_keeps_the_batch_axis_for_one_image_and_reparameterises():
    # The official `StyleEncoder.forward` calls `.squeeze()`, which turns [1, 8] into [8].
    encoder = _networks()["style_encoder"]
    image = np.random.default_rng(1).uniform(-1, 1, (1, S, S, 3)).astype(np.float32)
    noise = tf.fill((1, STYLE), 0.5)
    style, mu, logvar = (np.asarray(t) for t in encoder({"image": tf.constant(image),
                                                           "noise": noise}))
    assert style.shape == mu.shape == logvar.shape == (1, STYLE)
    np.testing.assert_allclose(style, mu + 0.5 * np.exp(0.5 * logvar), rtol=1e-5)
    first = np.asarray(encoder.encode(image, seed=4)[0])
    np.testing.assert_array_equal(first, np.asarray(encoder.encode(image, seed=4)[0]))
    assert np.abs(first - np.asarray(encoder.encode(image, seed=5)[0])).max() > 1e-4
    np.testing.assert_array_equal(np.asarray(encoder.encode(image)[0]), mu)


def test_every_conv_and_dense_is_spectrally_normalised():
    for name, network in _networks(num_clusters=K, up_type="nearest").items():
        assert _unwrapped_kernels(network) == [], name


def test_cbin_conditioning_changes_decoder_and_discriminator_outputs():
    nets = _networks()
    rng = np.random.default_rng(2)
    images = rng.uniform(-1, 1, (2, S, S, 3)).astype(np.float32)
    content = nets["content_encoder"](images)
    style = tf.constant(rng.normal(size=(2, STYLE)).astype(np.float32))
    generator = nets["generator"]
    decode = lambda label, z=style: np.asarray(generator(
        {"content": content, "label": tf.constant(np.tile(label, (2, 1))), "style": z}))
    popular = decode(POPULAR_COLOR)
    assert np.abs(popular - decode(UNPOPULAR_COLOR)).max() > 1e-5
    assert np.abs(popular - decode(POPULAR_EDGE)).max() > 1e-5
    assert np.abs(popular - decode(POPULAR_COLOR, -style)).max() > 1e-5
    np.testing.assert_array_equal(popular, decode(POPULAR_COLOR))
    judge = lambda label: np.asarray(nets["prior_discriminator"](
        {"image": tf.constant(images), "label": tf.constant(np.tile(label, (2, 1)))})[0])
    assert np.abs(judge(POPULAR_COLOR) - judge(UNPOPULAR_COLOR)).max() > 0
    # Conditioning is through CBIN only: no projection / label-concatenation layers.
    cbin = [layer for layer in generator._flatten_layers(include_self=False)
            if isinstance(layer, CentralBiasingInstanceNorm)]
    assert len(cbin) == 2 * TINY["decoder_residual_blocks"]


def test_generator_norm_type_adain_conditions_through_scale_and_bias():
    from pop_tf.layers import AdaptiveInstanceNorm

    nets = _networks(norm_type="adain")
    generator = nets["generator"]
    adain = [layer for layer in generator._flatten_layers(include_self=False)
             if isinstance(layer, AdaptiveInstanceNorm)]
    assert len(adain) == 2 * TINY["decoder_residual_blocks"]
    assert generator.get_config()["norm_type"] == "adain"
    clone = type(generator).from_config(generator.get_config())
    assert clone.count_params() == generator.count_params()
    with pytest.raises(ValueError, match="norm_type"):
        dmit.Generator(norm_type="batch")


def test_network_get_config_round_trips():
    for name, network in _networks(num_clusters=K, dropout_rate=0.5).items():
        config = network.get_config()
        clone = type(network).from_config(config)
        assert clone.get_config() == config, name
        assert clone.count_params() == network.count_params(), name
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(network))
        assert type(restored) is type(network) and restored.get_config() == config, name


def test_parameter_counts():
    counts = dmit.parameter_counts(S, **TINY)
    nets = set(dmit.build_networks(**TINY))
    assert set(counts) == nets | {"total"}
    assert all(isinstance(v, int) and v > 0 for v in counts.values())
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert "encoded_discriminator" not in dmit.parameter_counts(
        S, share_discriminator=True, **TINY)
    with pytest.raises(ValueError, match="image_size"):
        dmit.parameter_counts(16, **TINY)


def test_paper_width_parameter_counts_match_the_official_layer_layout():
    counts = dmit.parameter_counts(256)
    # Worked out by hand from DMIT's network.py (weights + biases; SN `u` is a buffer):
    # style encoder: head 4·4·3·64+64; DownResBlocks 64→128→192→256 (two 3×3 no-bias convs and
    # a 1×1 shortcut with bias each); two 256→8 heads.
    assert counts["style_encoder"] == (3136 + (36864 + 73728 + 8320) + (147456 + 221184 + 24768)
                                       + (331776 + 442368 + 49408) + 2 * 2056)
    # content encoder: 7·7·3·64 + 4·4·64·128 + 4·4·128·256 + 4 res blocks of 2·3·3·256·256.
    assert counts["content_encoder"] == 9408 + 131072 + 524288 + 4 * 2 * 589824
    # decoder: 6 res blocks (2 convs + 2 CBIN dense 12→256), two transposed convs with
    # per-channel layer-norm affine, 7·7·64·3 + 3.
    assert counts["generator"] == (6 * (2 * 589824 + 2 * (12 * 256 + 256))
                                   + (524288 + 2 * 128) + (131072 + 2 * 64) + 9411)
    assert counts["prior_discriminator"] == counts["encoded_discriminator"] == 750946
    assert counts["content_discriminator"] == 17912065


def test_parameter_count_script_prints_the_paper_preset(capsys):
    assert dmit.main(["--preset", "paper"]) == 0
    out = capsys.readouterr().out
    assert "256×256" in out
    total = dmit.parameter_counts(256)["total"]
    assert re.search(rf"total\s+{total:,d}$", out.strip())


# --- trainer ------------------------------------------------------------------------------------


def test_trainer_and_compile_reject_bad_arguments_by_name():
    nets = _networks()
    with pytest.raises(ValueError, match="diversity"):
        dmit_trainer.DMITTrainer(**nets, diversity="lots")
    with pytest.raises(ValueError, match="encoded_discriminator"):
        dmit_trainer.DMITTrainer(**{**nets, "encoded_discriminator": None})
    with pytest.raises(ValueError, match="clusters"):
        dmit_trainer.DMITTrainer(**nets, diversity="clusters")
    model = dmit_trainer.DMITTrainer(**nets)
    with pytest.raises(ValueError, match="compile"):
        model._require_compiled()
    optimizers = dmit_trainer.make_optimizers()
    with pytest.raises(ValueError, match="generator_optimizer"):
        model.compile({k: v for k, v in optimizers.items() if k != "generator_optimizer"})
    with pytest.raises(ValueError, match="separate instance"):
        model.compile({**optimizers, "content_d_optimizer": optimizers["generator_optimizer"]})
    with pytest.raises(ValueError, match="Unknown optimizer"):
        model.compile({**optimizers, "style_optimizer": keras.optimizers.Adam()})


def test_each_optimizer_is_built_on_its_own_variable_set():
    model = _trainer()
    sets = model.variable_sets()
    assert set(model.optimizers) == set(dmit_trainer.OPTIMIZER_NAMES) == set(sets)
    for name, optimizer in model.optimizers.items():
        # Adam: iterations + learning rate + a momentum and a velocity per variable.
        assert len(optimizer.variables) == 2 + 2 * len(sets[name]), name
    assert {id(v) for v in sets["generator_optimizer"]} == {
        id(v) for v in model.generator.trainable_variables + model.style_encoder.trainable_variables
        + model.content_encoder.trainable_variables}
    assert model.optimizer is model.optimizers["generator_optimizer"]


def test_loss_scale_optimizers_scale_and_unscale_each_step():
    # Mixed precision: every step scales its objective with optimizer.scale_loss.
    networks = _networks()
    model = dmit_trainer.DMITTrainer(**networks)
    model.compile({name: keras.optimizers.LossScaleOptimizer(optimizer)
                   for name, optimizer in dmit_trainer.make_optimizers().items()})
    batch = model._unpack(_batch())
    noise = model._noise(2)
    plain = _trainer()  # same seed: same initial weights, plain Adam
    assert _changed_networks(model, lambda: model._decoder_step(batch, noise)) == {"G"}
    plain._decoder_step(plain._unpack(_batch()), plain._noise(2))
    for scaled, reference in zip(model.generator.trainable_variables,
                                 plain.generator.trainable_variables):
        np.testing.assert_allclose(np.asarray(scaled), np.asarray(reference), atol=1e-6)


def test_batch_pairs_each_image_with_the_other_domain():
    model = _trainer()
    data = _batch(n=2, seed=3)
    batch = model._unpack(data)
    np.testing.assert_array_equal(np.asarray(batch["x"]),
                                  np.concatenate([data["image_a"], data["image_b"]]))
    np.testing.assert_array_equal(np.asarray(batch["c_src"]),
                                  np.concatenate([data["label_a"], data["label_b"]]))
    np.testing.assert_array_equal(np.asarray(batch["c_tgt"]),
                                  np.concatenate([data["label_b"], data["label_a"]]))
    with pytest.raises(ValueError, match="image_b"):
        model._unpack({"image_a": data["image_a"], "label_a": data["label_a"]})


def test_each_sub_step_changes_only_its_own_networks():
    model = _trainer()
    batch = model._unpack(_batch(n=1))
    noise = model._noise(2)
    content, fake_prior, fake_encoded = model._discriminator_inputs(batch, noise)
    steps = {
        "content_d": (lambda: model._content_d_step(batch, content), {"D_c"}),
        "image_d": (lambda: model._image_d_steps(batch, fake_prior, fake_encoded),
                    {"D_prior", "D_enc"}),
        "generator": (lambda: model._generator_step(batch, noise), {"G", "E_s", "E_c"}),
        "decoder": (lambda: model._decoder_step(batch, noise), {"G"}),
        "content_encoder": (lambda: model._content_encoder_step(batch, noise), {"E_c"}),
    }
    for name, (step, expected) in steps.items():
        assert _changed_networks(model, step) == expected, name
    iterations = {k: int(o.iterations.numpy()) for k, o in model.optimizers.items()}
    # The decoder-only and content-encoder-only steps apply the generator's Adam again.
    assert iterations == {**{k: 1 for k in dmit_trainer.OPTIMIZER_NAMES},
                          "generator_optimizer": dmit_trainer.GENERATOR_UPDATES_PER_STEP}


def test_sub_steps_share_the_generators_adam_moments():
    """DMIT's update_model steps the decoder's optimizer a second time: one set of moments."""
    model = _trainer()
    batch = model._unpack(_batch(n=1))
    noise = model._noise(2)
    optimizer = model.optimizers["generator_optimizer"]
    decoder_kernel = model.generator.trainable_variables[0]
    model._generator_step(batch, noise)
    after_full = np.asarray(optimizer._momentums[optimizer._get_variable_index(decoder_kernel)])
    model._decoder_step(batch, noise)
    after_decoder = np.asarray(optimizer._momentums[optimizer._get_variable_index(decoder_kernel)])
    assert np.abs(after_full).sum() > 0 and not np.array_equal(after_full, after_decoder)


def test_learning_rate_schedules_count_training_steps_not_applies():
    """A shared D (2 applies a step) and the generator (3) decay on the training-step clock."""
    from pop_tf.training import ConstantThenLinearDecay

    schedule = ConstantThenLinearDecay(1.0, total_steps=100, decay_steps=50)
    optimizers = dmit_trainer.make_optimizers(schedule, share_discriminator=True)
    for name, applies in (("generator_optimizer", dmit_trainer.GENERATOR_UPDATES_PER_STEP),
                          ("prior_d_optimizer", dmit_trainer.SHARED_D_UPDATES_PER_STEP),
                          ("content_d_optimizer", 1)):
        optimizers[name].iterations.assign(75 * applies)  # training step 75: half-way down
        assert float(optimizers[name].learning_rate) == pytest.approx(0.5), name


def test_shared_image_discriminator_takes_both_updates_with_one_optimizer():
    model = _trainer(share=True)
    assert model.image_discriminators["encoded"] is model.prior_discriminator
    assert "encoded_d_optimizer" not in model.optimizers
    batch = model._unpack(_batch())
    _, fake_prior, fake_encoded = model._discriminator_inputs(batch, model._noise(2))
    changed = _changed_networks(
        model, lambda: model._image_d_steps(batch, fake_prior, fake_encoded))
    assert changed == {"D_prior"}
    assert int(model.optimizers["prior_d_optimizer"].iterations.numpy()) == 2


def test_kl_is_summed_and_matches_a_hand_computation():
    model = _trainer()
    batch = model._unpack(_batch(n=2, seed=4))
    noise = model._noise(4)
    losses, _ = model._generator_losses(batch, noise, training=False)
    _, mu, logvar = (np.asarray(t, np.float64) for t in model.style_encoder(
        {"image": batch["x"], "noise": noise["eps"]}))
    expected = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar))
    assert float(losses["kl_loss"]) == pytest.approx(expected, rel=1e-4)
    # Summed over all 4 images and 8 dimensions, not averaged.
    assert float(losses["kl_loss"]) == pytest.approx(
        32 * float(np.mean(-0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)))), rel=1e-4)


def test_discriminator_losses_follow_dmit():
    model = _trainer()
    batch = model._unpack(_batch(n=1, seed=5))
    content, fake_prior, _ = model._discriminator_inputs(batch, model._noise(2))
    d = model.prior_discriminator
    real = [np.asarray(t) for t in d({"image": batch["x"], "label": batch["c_src"]})]
    wrong = [np.asarray(t) for t in d({"image": batch["x"], "label": batch["c_tgt"]})]
    fake = [np.asarray(t) for t in d({"image": fake_prior, "label": batch["c_tgt"]})]
    relu = lambda t: np.maximum(t, 0)
    # Hinge: the real image with the wrong (target) label is a fake, weights 1, ½, ½.
    expected = sum(relu(1 - r).mean() + 0.5 * relu(1 + w).mean() + 0.5 * relu(1 + f).mean()
                   for r, w, f in zip(real, wrong, fake))
    got = float(model._image_d_loss(d, batch, fake_prior, training=False))
    assert got == pytest.approx(expected, rel=1e-5)
    # Content D: LSGAN, the same content real with c_src and fake with c_tgt.
    dc = model.content_discriminator
    real_c = np.asarray(dc({"content": content, "label": batch["c_src"]}))
    fake_c = np.asarray(dc({"content": content, "label": batch["c_tgt"]}))
    expected_c = ((real_c - 1) ** 2).mean() + (fake_c ** 2).mean()
    got_c = float(model._content_d_losses(batch, content, training=False)["d_content_loss"])
    assert got_c == pytest.approx(expected_c, rel=1e-5)


def test_fit_one_epoch_logs_every_loss_under_the_default_strategy():
    model = _trainer(widths=SHALLOW)
    dataset = tf.data.Dataset.from_tensor_slices(_batch(n=4, seed=1)).batch(2)
    history = model.fit(dataset, epochs=1, validation_data=dataset.take(1), shuffle=False,
                        verbose=0)
    names = set(model.loss_names)
    assert {"d_content_loss", "d_prior_loss", "d_encoded_loss", "g_loss", "reconstruction_loss",
            "kl_loss", "cycle_loss", "latent_regression_loss", "diversity_loss",
            "content_reconstruction_loss"} <= names
    assert set(history.history) == names | {f"val_{n}" for n in names}
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert int(model.step_counter.numpy()) == 2
    assert {k: int(o.iterations.numpy()) for k, o in model.optimizers.items()} == {
        **{k: 2 for k in dmit_trainer.OPTIMIZER_NAMES},
        "generator_optimizer": 2 * dmit_trainer.GENERATOR_UPDATES_PER_STEP}
    # call() exists so that Keras and tf.distribute can build and run the wrapper model.
    out = model({"image": tf.constant(_batch(n=2)["image_a"]),
                 "label": tf.constant(np.tile(POPULAR_COLOR, (2, 1)))})
    assert tuple(out.shape) == (2, S, S, 3)


def test_sample_is_deterministic_per_seed_and_independent_of_the_batch():
    model = _trainer()
    images = _batch(n=2, seed=6)["image_a"]
    first = np.asarray(model.sample(images, POPULAR_COLOR, seed=3, num_samples=3))
    assert first.shape == (2, 3, S, S, 3)
    np.testing.assert_array_equal(
        first, np.asarray(model.sample(images, POPULAR_COLOR, seed=3, num_samples=3)))
    other = np.asarray(model.sample(images, POPULAR_COLOR, seed=4, num_samples=3))
    assert np.abs(first - other).max() > 1e-5
    assert np.abs(first[:, 0] - first[:, 1]).max() > 1e-5  # different styles per column
    alone = np.asarray(model.sample(images[:1], POPULAR_COLOR, seed=3, num_samples=3))
    np.testing.assert_allclose(alone[0], first[0], atol=1e-5)
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(images, POPULAR_COLOR, num_samples=0)


def test_translate_takes_the_style_from_the_reference():
    model = _trainer()
    data = _batch(n=2, seed=7)
    content, reference = data["image_a"], data["image_b"]
    out = np.asarray(model.translate(content, reference, POPULAR_COLOR))
    assert out.shape == (2, S, S, 3)
    np.testing.assert_array_equal(out, np.asarray(model.translate(content, reference,
                                                                  POPULAR_COLOR)))
    other_reference = np.asarray(model.translate(content, reference[::-1], POPULAR_COLOR))
    assert np.abs(out - other_reference).max() > 1e-6
    # Style = the encoder's mean on the reference; content from the content images.
    mu = model.style_encoder.encode(reference)[1]
    direct = model.generator({"content": model.content_encoder(content),
                              "label": tf.constant(np.tile(POPULAR_COLOR, (2, 1))),
                              "style": mu})
    np.testing.assert_allclose(out, np.asarray(direct), atol=1e-6)


def _cluster_trainer():
    rng = np.random.default_rng(0)
    extractor = keras.Sequential([
        keras.Input((S, S, 3)), keras.layers.Conv2D(2, 3, strides=4),
        keras.layers.BatchNormalization(), keras.layers.Flatten(), keras.layers.Dense(D)],
        name="tiny_extractor")
    covariances = np.stack([np.eye(D)] * K)
    masks = np.ones((K, D), np.float32)
    model = _trainer(diversity="clusters", feature_extractor=extractor,
                     cluster_means=rng.normal(size=(K, D)).astype(np.float32),
                     inverse_covariances=np.asarray(
                         L.masked_inverse_covariances(covariances, masks)),
                     feature_masks=masks, cluster_shares=[0.5, 0.3, 0.2])
    return model, extractor


def test_cluster_diversity_terms_update_the_decoder_only_and_leave_the_extractor_frozen():
    model, extractor = _cluster_trainer()
    assert not {id(v) for v in extractor.weights} & {id(v) for v in model.trainable_variables}
    frozen = [np.asarray(v).copy() for v in extractor.variables]
    batch = model._unpack(_batch(n=1, clusters=True))
    noise = model._noise(2)
    losses = {}
    changed = _changed_networks(
        model, lambda: losses.update(model._decoder_step(batch, noise)))
    assert changed == {"G"}
    for name in ("mode_seeking_loss", "cluster_mean_loss", "mahalanobis_loss"):
        assert np.isfinite(float(losses[name])) and float(losses[name]) > 0, name
    assert all(np.array_equal(b, np.asarray(v)) for b, v in zip(frozen, extractor.variables))
    # Inference with clusters: drawn from the shares for a seed, or given.
    images = _batch(n=2)["image_a"]
    drawn = np.asarray(model.sample(images, POPULAR_COLOR, seed=1, num_samples=2))
    np.testing.assert_array_equal(
        drawn, np.asarray(model.sample(images, POPULAR_COLOR, seed=1, num_samples=2)))
    fixed = np.asarray(model.sample(images, POPULAR_COLOR, seed=1, num_samples=2, clusters=2))
    assert fixed.shape == (2, 2, S, S, 3)


def test_cluster_losses_judge_only_fakes_in_a_colour_domain():
    """The clusters are fitted on colour images: an edge-domain fake has no cluster to match."""
    model, extractor = _cluster_trainer()
    model.colour_label_index = 3
    data = _batch(n=2, clusters=True)
    data["label_a"] = np.stack([UNPOPULAR_COLOR, UNPOPULAR_COLOR])
    data["label_b"] = np.stack([POPULAR_EDGE, POPULAR_COLOR])
    batch = model._unpack(data)  # targets: [edge, colour, colour, colour]
    noise = model._noise(4)
    losses, _ = model._decoder_losses(batch, noise, training=False)
    content = model.content_encoder(batch["x"])
    fakes = model._decode(tf.concat([content] * 2, 0), tf.concat([batch["c_tgt"]] * 2, 0),
                          tf.concat([noise["z1"], noise["z2"]], 0),
                          tf.concat([batch["k_tgt"]] * 2, 0), training=False)
    features = np.asarray(extractor(fakes, training=False))
    ids = np.concatenate([np.asarray(batch["id_tgt"])] * 2)
    per_sample = np.abs(np.asarray(model.cluster_means)[ids] - features).sum(axis=1)  # L_d: the L1 norm over feature dims
    colour = np.array([0, 1, 1, 1] * 2, bool)
    assert float(losses["cluster_mean_loss"]) == pytest.approx(per_sample[colour].mean(), rel=1e-4)
    assert per_sample[colour].mean() != pytest.approx(per_sample.mean(), rel=1e-3)


def test_fit_one_step_under_a_two_replica_mirrored_strategy():
    # Two logical CPUs must be configured before TensorFlow starts: run in a fresh process.
    script = textwrap.dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import numpy as np
        from test_dmit import SHALLOW, _batch, _trainer
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model = _trainer(widths=SHALLOW)
        dataset = tf.data.Dataset.from_tensor_slices(_batch(n=2, seed=1)).batch(2)
        history = model.fit(dataset, epochs=1, shuffle=False, verbose=0)
        assert all(np.isfinite(v[0]) for v in history.history.values()), history.history
        assert set(history.history) == set(model.loss_names), sorted(history.history)
        assert int(model.step_counter.numpy()) == 1
        from pop_tf.models.dmit_trainer import GENERATOR_UPDATES_PER_STEP
        iterations = {k: int(o.iterations.numpy()) for k, o in model.optimizers.items()}
        assert iterations.pop("generator_optimizer") == GENERATOR_UPDATES_PER_STEP
        assert set(iterations.values()) == {1}, iterations
        print("OK", sorted(history.history))
    """)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
