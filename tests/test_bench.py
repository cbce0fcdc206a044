"""`pop-tf bench`: the TensorFlow benchmarks run and report consistent figures (tiny sizes), and the
translator's float16 and bfloat16 paths build and train on CPU."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest

from pop_tf import bench
from pop_tf.stages import train_translator

# DMIT at width 8 with shallow networks: tracing the six-update step dominates, not the arithmetic.
SHALLOW_DMIT = ["base_filters=8", "content_residual_blocks=0", "decoder_residual_blocks=1", "style_blocks=2",
                "image_d_blocks=2", "content_d_blocks=2"]


def _run(tmp_path, *args) -> dict:
    out = tmp_path / "bench.json"
    assert bench.main([*args, "--repeats", "1", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _assert_step_figures(row, images, peak):
    assert row["images_per_s"] == pytest.approx(images / row["median_s"])
    assert row["gflop_per_step"] > 0
    assert row["achieved_gflops"] == pytest.approx(row["gflop_per_step"] / row["median_s"])
    assert row["peak_fraction"] == pytest.approx(row["achieved_gflops"] / peak)


def test_ranker_and_serving_figures_are_consistent(tmp_path):
    report = _run(tmp_path, "--what", "ranker,serving", "--backbone", "small", "--size", "32", "--batch", "2")
    results = report["results"]
    peak = results["matmul"]["gflops"]
    step = results["ranker_train_step"]
    assert peak > 0 and step["peak"] == "matmul"
    _assert_step_figures(step, 4, peak)
    # The step graph's count (forward, both backward kernels, updates) is about 3 forward passes.
    assert 0.8 < step["gflop_per_step"] / step["gflop_per_step_3x_forward"] < 1.3
    assert results["saved_model_score"]["ratio_to_keras"] == pytest.approx(
        results["saved_model_score"]["images_per_s"] / results["keras_in_process"]["images_per_s"])


def test_translator_iteration_and_sample_endpoint_figures(tmp_path):
    sets = [arg for pair in SHALLOW_DMIT for arg in ("--set", pair)]
    report = _run(tmp_path, "--what", "translator,sample", "--size", "32", "--batch", "2", *sets)
    results = report["results"]
    assert report["translator"]["base_filters"] == 8 and report["translator"]["image_size"] == 32
    step = results["translator_train_step"]
    assert step["images_per_iteration"] == 2
    _assert_step_figures(step, 2, results["matmul"]["gflops"])
    sample = results["translator_saved_model_sample"]
    assert sample["images_per_s"] == pytest.approx(2 / sample["median_s"])
    assert sample["ratio_to_keras"] == pytest.approx(
        sample["images_per_s"] / results["translator_keras_in_process"]["images_per_s"])


def test_input_pipeline_is_compared_with_the_ranker_step(tmp_path, pairs_workdir):
    results = _run(tmp_path, "--what", "ranker,input", "--backbone", "small", "--size", "32", "--batch", "2",
                   "--pairs", str(pairs_workdir / "pairs"))["results"]
    step, pipeline = results["ranker_train_step"], results["input_pipeline"]
    assert step["pairs_per_s"] == pytest.approx(2 / step["median_s"])
    assert pipeline["ratio_to_ranker_step"] == pytest.approx(pipeline["pairs_per_s"] / step["pairs_per_s"])


def test_each_policy_gets_its_own_rows_peak_and_speedup_over_float32(tmp_path):
    report = _run(tmp_path, "--what", "ranker,serving", "--backbone", "small", "--size", "32", "--batch", "2",
                  "--precision", "bfloat16,none,float16", "--jit")
    results = report["results"]
    assert report["precisions"] == ["none", "float16", "bfloat16"] and report["jit_compile"]
    for precision in ("float16", "bfloat16"):
        step, plain = results[f"ranker_train_step_{precision}"], results["ranker_train_step"]
        assert step["precision"] == precision and step["peak"] == f"matmul_{precision}"
        _assert_step_figures(step, 4, results[f"matmul_{precision}"]["gflops"])
        assert step["speedup"] == pytest.approx(step["images_per_s"] / plain["images_per_s"])
        score = results[f"saved_model_score_{precision}"]
        assert score["speedup"] == pytest.approx(score["images_per_s"] / results["saved_model_score"]["images_per_s"])
    assert "speedup" not in results["ranker_train_step"]
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_dmit_builds_and_trains_a_step(precision):
    cfg = dataclasses.replace(bench.translator_config(32, SHALLOW_DMIT, jit=False), mixed_precision=precision)
    trainer = train_translator.build_dmit(cfg)
    train_translator.compile_dmit(trainer, cfg, cfg.learning_rate)
    assert keras.config.dtype_policy().name == "float32"  # restored after building
    assert trainer.generator.compute_dtype == precision and trainer.generator.variable_dtype == "float32"
    # Only float16 needs a loss scale: bfloat16 has float32's exponent range.
    assert all(isinstance(o, keras.optimizers.LossScaleOptimizer) == (precision == "float16")
               for o in trainer.optimizers.values())
    before = [np.asarray(v).copy() for v in trainer.generator.trainable_variables]
    losses = trainer.train_step(bench._domain_batch(1, 32))
    assert all(math.isfinite(float(value)) for value in losses.values())
    assert any(not np.array_equal(b, np.asarray(v)) for b, v in zip(before, trainer.generator.trainable_variables))


def test_bad_options_are_named(capsys):
    for argv, named in ((["--what", "ranker,speed"], "speed"),
                        (["--what", "translator", "--batch", "3"], "--batch 3"),
                        (["--what", "ranker", "--set", "base_filters=8"], "--set"),
                        (["--what", "translator", "--set", "train_ranker.batch_size=2"], "train_ranker.batch_size"),
                        (["--what", "translator", "--size", "64"], "train_translator.content_d_blocks"),
                        (["--what", "ranker", "--precision", "none,int8"], "--precision none,int8")):
        with pytest.raises(SystemExit) as exit_info:
            bench.main(argv)
        assert exit_info.value.code == 2 and named in capsys.readouterr().err, argv
