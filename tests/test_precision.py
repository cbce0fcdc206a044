"""Compute precision (pop_tf.precision): the `auto` choice and its fallbacks, the float32 islands
(normalisation statistics, fused batch norm), a bfloat16 training step of pix2pix, and exported
signatures that do not depend on the precision a model was trained in."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pop_tf import bench, precision, serving
from pop_tf.layers import normalization
from pop_tf.models import ranker as ranker_lib
from pop_tf.stages import train_translator

# The shallow DMIT of the bench tests: tracing dominates, not arithmetic.
SHALLOW_DMIT = ["base_filters=8", "content_residual_blocks=0", "decoder_residual_blocks=1", "style_blocks=2",
                "image_d_blocks=2", "content_d_blocks=2"]


def _never_called():
    raise AssertionError("the speed probe ran although the decision did not need it")


def test_auto_takes_float16_on_a_gpu_without_probing_the_cpu():
    assert precision.choose(gpu=True, flags={"avx512_bf16"}, speedup=_never_called) == "float16"


def test_auto_falls_back_to_float32_on_a_cpu_without_bfloat16_kernels():
    assert precision.choose(gpu=False, flags={"avx2", "avx512f"}, speedup=_never_called) == "none"
    assert precision.choose(gpu=False, flags=set(), speedup=_never_called) == "none"


def test_auto_takes_bfloat16_only_where_the_probe_measures_it_fast():
    assert precision.choose(gpu=False, flags={"avx512_bf16"}, speedup=lambda: 1.9) == "bfloat16"
    assert precision.choose(gpu=False, flags={"amx_bf16"}, speedup=lambda: precision.MIN_BFLOAT16_SPEEDUP) == "bfloat16"
    # The flag without the speed (emulated kernels, a VM that hides the units): stay in float32.
    assert precision.choose(gpu=False, flags={"avx512_bf16"}, speedup=lambda: 1.05) == "none"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\nbugs\t\t: none\n")
    assert precision.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512_bf16", "amx_tile"}
    assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_resolve_names_the_allowed_values_and_auto_is_concrete():
    assert precision.resolve("bfloat16") == "bfloat16"
    assert precision.resolve("auto") in ("none", "float16", "bfloat16")
    with pytest.raises(ValueError, match="'int8'.*none, float16, bfloat16, auto"):
        precision.resolve("int8")


def test_policy_applies_inside_the_block_only_and_only_float16_scales_losses():
    with precision.policy("bfloat16"):
        assert keras.layers.Dense(2).compute_dtype == "bfloat16"
    with precision.policy("none"):
        assert keras.layers.Dense(2).compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"
    adam = keras.optimizers.Adam()
    assert precision.loss_scaled(adam, "bfloat16") is adam and precision.loss_scaled(adam, "none") is adam
    assert isinstance(precision.loss_scaled(keras.optimizers.Adam(), "float16"), keras.optimizers.LossScaleOptimizer)


@pytest.mark.parametrize("layer", [normalization.InstanceNormalization, normalization.LayerNormalization])
def test_normalisation_statistics_stay_float32_under_bfloat16(layer):
    # Activations far from zero with a small spread, exactly representable in bfloat16 (its
    # spacing at 100 is 0.5): moments taken in bfloat16 round the mean of each channel to 100
    # and miss the output by ~0.2; taken in float32 they are exact.
    x = 100.0 + 0.5 * tf.cast(tf.random.stateless_uniform([2, 8, 8, 4], seed=[3, 4], minval=-4, maxval=5,
                                                          dtype=tf.int32), tf.float32)
    expected = layer()(x).numpy()
    with precision.policy("bfloat16"):
        mixed = layer()
    outputs = mixed(x)
    assert outputs.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(outputs, tf.float32).numpy(), expected, atol=0.04)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_matches_keras_outputs_statistics_and_gradients(policy):
    keras.config.set_dtype_policy(policy)
    try:
        x = tf.random.stateless_normal([4, 6, 6, 5], seed=[1, 2]) * 3.0 + 1.0
        keras_bn, fused = keras.layers.BatchNormalization(momentum=0.9), normalization.BatchNormalization(momentum=0.9)
        for layer in (keras_bn, fused):
            layer.build(x.shape)
            layer.gamma.assign(np.arange(1, 6, dtype=np.float32))
            layer.beta.assign(np.full(5, 0.5, np.float32))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            outputs = [layer(x, training=True) for layer in (keras_bn, fused)]
            # A random linear read-out: Σ y² would be constant in x (BN's output has a fixed norm).
            readout = tf.random.stateless_normal(x.shape, seed=[5, 6])
            losses = [tf.reduce_sum(tf.cast(y, tf.float32) * readout) for y in outputs]
    finally:
        keras.config.set_dtype_policy("float32")
    tolerance = 1e-5 if policy == "float32" else 4e-3
    assert outputs[1].dtype == outputs[0].dtype
    np.testing.assert_allclose(np.float32(outputs[1]), np.float32(outputs[0]), atol=tolerance * 10)
    # The moving variance takes the biased batch variance, as Keras's layer does.
    np.testing.assert_allclose(fused.moving_variance.numpy(), keras_bn.moving_variance.numpy(), rtol=1e-5)
    np.testing.assert_allclose(fused.moving_mean.numpy(), keras_bn.moving_mean.numpy(), rtol=1e-5, atol=1e-7)
    for wrt in (x, None):
        grads = [tape.gradient(loss, x if wrt is not None else layer.gamma)
                 for loss, layer in zip(losses, (keras_bn, fused))]
        # Relative to the whole gradient: BN's gradient is a difference of large terms per element.
        error = np.linalg.norm(grads[1].numpy() - grads[0].numpy()) / np.linalg.norm(grads[0].numpy())
        assert error < (1e-4 if policy == "float32" else 2e-2)
    # Inference uses the moving statistics.
    np.testing.assert_allclose(np.float32(fused(x)), np.float32(keras_bn(x)), atol=tolerance * 10)


def test_fused_batch_norm_reads_and_writes_keras_weights_files(tmp_path):
    def model(bn):
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 1), bn(name="bn")])

    original = model(keras.layers.BatchNormalization)
    original.layers[-1].moving_mean.assign([0.5, -0.5])
    original.save_weights(str(tmp_path / "keras.weights.h5"))
    fused = model(normalization.BatchNormalization)
    fused.load_weights(str(tmp_path / "keras.weights.h5"))
    np.testing.assert_array_equal(fused.layers[-1].moving_mean.numpy(), [0.5, -0.5])
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(fused(x), original(x), atol=1e-6)


def test_applications_get_the_fused_layer_with_the_same_outputs():
    from pop_tf.models import backbones

    keras.utils.set_random_seed(0)
    fused = backbones.application("resnet50", "none", (32, 32, 3), pooling="avg")
    keras.utils.set_random_seed(0)
    plain = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    kinds = {type(layer) for layer in fused.layers}
    assert normalization.BatchNormalization in kinds and keras.layers.BatchNormalization not in kinds
    x = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(fused(x).numpy(), plain(x).numpy(), rtol=1e-4, atol=1e-5)


def _pix2pix_step(policy: str):
    """A tiny pix2pix after one training step: (trainer, losses, the set of variables that moved)."""
    cfg = dataclasses.replace(train_translator.config_lib.TranslatorConfig(), model="pix2pix", image_size=32,
                              base_filters=8, pix2pix_image_d_blocks=2, up_type="nearest", mixed_precision=policy)
    trainer = train_translator._build_pix2pix(cfg, 1, {}, total_steps=10)
    trainer.compile(*(precision.loss_scaled(keras.optimizers.Adam(2e-4), policy) for _ in range(2)))
    rng = np.random.default_rng(0)
    batch = {"edge": rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32),
             "image": rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32), "cluster": np.zeros(2, np.int32)}
    networks = trainer.generator.trainable_variables + trainer.discriminator.trainable_variables
    before = [np.asarray(v).copy() for v in networks]
    losses = trainer.train_step(batch)
    assert all(v.dtype == "float32" for v in networks)
    return trainer, losses, {v.path for b, v in zip(before, networks) if not np.array_equal(b, np.asarray(v))}


def test_a_bfloat16_pix2pix_step_updates_what_a_float32_step_updates_with_finite_losses():
    trainer, losses, moved = _pix2pix_step("bfloat16")
    assert trainer.generator.compute_dtype == "bfloat16" and trainer.discriminator.compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    assert all(math.isfinite(float(value)) for value in losses.values())
    # At 32² the U-Net's innermost block sees a 1×1 map that instance norm zeroes in either precision.
    _, plain_losses, plain_moved = _pix2pix_step("none")
    assert moved == plain_moved and len(moved) > 20
    assert float(losses["g_loss"]) == pytest.approx(float(plain_losses["g_loss"]), rel=0.05)
    images, _ = trainer.sample(np.zeros([1, 32, 32, 3], np.float32), num_samples=2)
    assert images.dtype == tf.float32


def _signature_dtypes(loaded) -> dict:
    """{signature: (input (name, dtype) pairs, output (name, dtype) pairs)} of a loaded SavedModel."""
    found = {}
    for name, function in loaded.signatures.items():
        inputs = sorted((key, spec.dtype.name) for key, spec in function.structured_input_signature[1].items())
        outputs = sorted((key, spec.dtype.name) for key, spec in function.structured_outputs.items())
        found[name] = (inputs, outputs)
    return found


def test_exported_signatures_keep_their_dtypes_whatever_the_training_precision(tmp_path):
    signatures = {}
    for policy in ("none", "bfloat16"):
        keras.utils.set_random_seed(0)
        ranker = ranker_lib.build_ranker("small", "none", 32, small_width=4, mixed_precision=policy)
        ranker_dir = serving.export_ranker(ranker, str(tmp_path / policy / "ranker"), {}, "")
        cfg = dataclasses.replace(bench.translator_config(32, SHALLOW_DMIT, jit=False), mixed_precision=policy)
        translator_dir = serving.export_translator(train_translator.build_dmit(cfg), str(tmp_path / policy / "dmit"),
                                                   {"image_size": 32}, "")
        ranker_loaded, translator_loaded = tf.saved_model.load(ranker_dir), tf.saved_model.load(translator_dir)
        signatures[policy] = (_signature_dtypes(ranker_loaded), _signature_dtypes(translator_loaded))
        scores = ranker_loaded.score(np.full([2, 32, 32, 3], 128, np.uint8))["score"]
        assert scores.dtype == tf.float32 and np.all(np.isfinite(scores.numpy()))
    assert signatures["bfloat16"] == signatures["none"]
    ranker_signatures, translator_signatures = signatures["none"]
    assert ranker_signatures["score"] == ([("images", "uint8")], [("score", "float32")])
    assert any(("images", "uint8") in outputs for _, outputs in translator_signatures.values())


def test_the_run_summary_names_each_stages_policy(tmp_path):
    from pop_tf import pipeline

    results = {}
    for stage, policy in (("train_ranker", "bfloat16"), ("train_translator", "none")):
        path = tmp_path / f"{stage}.json"
        path.write_text(json.dumps({"mixed_precision": policy}))
        results[stage] = {"config": str(path)}
    assert "compute precision: train_ranker bfloat16, train_translator none" in pipeline.summary(results)
