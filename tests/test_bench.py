"""`pop-tf bench`: the TensorFlow benchmarks run and report consistent figures (tiny sizes)."""

import json

import pytest

from pop_tf import bench


def test_ranker_and_serving_figures_are_consistent(tmp_path):
    out = tmp_path / "bench.json"
    assert bench.main(["--what", "ranker,serving", "--backbone", "small", "--size", "32", "--batch", "2",
                       "--repeats", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    peak = results["matmul"]["gflops"]
    step = results["ranker_train_step"]
    assert peak > 0 and step["images_per_s"] == pytest.approx(4 / step["median_s"])
    assert step["peak_fraction"] == pytest.approx(step["achieved_gflops"] / peak)
    assert step["gflop_per_step"] > 0
    assert results["saved_model_score"]["ratio_to_keras"] == pytest.approx(
        results["saved_model_score"]["images_per_s"] / results["keras_in_process"]["images_per_s"])


def test_unknown_benchmark_is_named(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--what", "ranker,speed"])
    assert exit_info.value.code == 2 and "speed" in capsys.readouterr().err
